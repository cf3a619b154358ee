"""Redis with a replica and three Sentinels on loopback, started by the very scripts the
manifests run (``base/redis-sentinel/redis-start.sh`` and ``sentinel-start.sh``): for the
failover tests, benchmarks and `raibid-devstack`.

Every server listens on 127.0.0.1 on a port of its own and announces ``127.0.0.1:<port>``
where a pod announces its stable DNS name; everything else (ask the Sentinels first, AOF with
fsync always, noeviction, one password for Redis and Sentinels, quorum 2) is the manifests'.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from raibid_gitops.devstack.redis_server import free_port
from raibid_gitops.errors import RedisUnavailable

#: How long a server may take to answer after it was started, and a set to settle (the
#: Sentinels learn of replicas from INFO every 10 s; a loaded 2-core box).
START_TIMEOUT = 60.0
#: The Sentinels' down-after-milliseconds here: short, so a failover test waits seconds, not
#: the manifests' 10 s. Then the first attempt often finds the replica's INFO too old (see
#: sentinel-start.sh) and aborts; a short failover-timeout makes the next attempt come 2 x 5 s
#: later instead of 2 minutes.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def scripts_dir() -> Path:
    from raibid_gitops.gitops.layout import templates_dir

    return templates_dir() / "base" / "redis-sentinel"


@dataclass
class HaServer:
    """One redis-server (data or Sentinel) started by its script; restartable."""

    name: str
    port: int
    workdir: Path
    script: str
    env: dict[str, str]
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "server.log", "ab")
        try:
            # The script execs redis-server: its pid is the server's, so a SIGKILL is a crash.
            self.proc = subprocess.Popen(["sh", str(scripts_dir() / self.script)], env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            log.close()

    def kill(self) -> None:
        """SIGKILL: the crash of a node, no shutdown, no last write."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join((self.workdir / "server.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class SentinelSet:
    """A primary, ``replicas`` replicas and three Sentinels; ``url`` is the Sentinel URL
    clients take (``redis+sentinel://h:p,h:p,h:p/<master>/0``), without the password."""

    password: str
    master_name: str
    data: list[HaServer]
    sentinels: list[HaServer]
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis+sentinel://{','.join(s.address for s in self.sentinels)}/{self.master_name}/0"

    @property
    def sentinel_addresses(self) -> str:
        return ",".join(s.address for s in self.sentinels)

    def by_address(self, address: str) -> HaServer:
        return next(s for s in self.data if s.address == address)

    def primary(self) -> str:
        """The primary's address as a majority of the Sentinels name it."""
        import redis

        seen: dict[str, int] = {}
        for s in self.sentinels:
            if s.pid is None:
                continue
            c = redis.Redis(host=s.host, port=s.port, password=self.password, socket_timeout=2,
                            decode_responses=True)
            try:
                # A client of one Sentinel gets the reply; redis-py types the Sentinel manager's bool.
                addr = cast("tuple[str, int] | None", c.sentinel_get_master_addr_by_name(self.master_name))
                host, port = addr or (None, None)
                if host:
                    seen[f"{host}:{port}"] = seen.get(f"{host}:{port}", 0) + 1
            except redis.RedisError:
                pass
            finally:
                c.close()
        if not seen:
            raise RedisUnavailable("no Sentinel names a primary")
        return max(seen, key=lambda a: seen[a])

    def role(self, server: HaServer) -> str | None:
        import redis

        c = redis.Redis(host="127.0.0.1", port=server.port, password=self.password, socket_timeout=2,
                        decode_responses=True)
        try:
            return str(c.info("replication").get("role"))
        except redis.RedisError:
            return None
        finally:
            c.close()

    def synced_replicas(self) -> int:
        """Replicas the primary counts as online."""
        import redis

        server = self.by_address(self.primary())
        c = redis.Redis(host="127.0.0.1", port=server.port, password=self.password, socket_timeout=2,
                        decode_responses=True)
        try:
            info = c.info("replication")
        finally:
            c.close()
        return sum(1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                   and v.get("state") == "online")

    def wait_ready(self, replicas: int, timeout: float = START_TIMEOUT) -> None:
        """Until every Sentinel names the same primary, knows the other two, and knows
        ``replicas`` replicas in good health, and the primary counts them online.

        A Sentinel learns of a replica only from the primary's INFO, which it reads every 10 s.
        A primary lost before that leaves the Sentinels with no replica to promote
        (``-failover-abort-no-good-slave``, again and again), so a set is ready only once
        every Sentinel could carry out a failover."""
        import redis

        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                views = set()
                peers = []
                known = []
                for s in self.sentinels:
                    c = redis.Redis(host=s.host, port=s.port, password=self.password, socket_timeout=2,
                                    decode_responses=True)
                    try:
                        m = cast("dict[str, Any]", c.sentinel_master(self.master_name))  # the reply: see primary()
                        views.add(f"{m['ip']}:{m['port']}")
                        peers.append(int(m.get("num-other-sentinels", 0)))
                        reps = c.sentinel_slaves(self.master_name)
                        known.append(sum(1 for r in reps if r.get("flags") == "slave"
                                         and r.get("master-link-status") == "ok"))
                    finally:
                        c.close()
                if (len(views) == 1 and min(peers) >= len(self.sentinels) - 1 and min(known) >= replicas
                        and self.synced_replicas() >= replicas):
                    return
                last = f"views {views}, peers {peers}, healthy replicas known {known}"
            except (redis.RedisError, StopIteration) as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"the Sentinel set did not settle within {timeout:.0f}s ({last})",
                                       hint=self.logs())
            time.sleep(0.1)

    def replica_views(self) -> str:
        """What each Sentinel knows of the replicas (flags, link, age of its INFO): what a
        failover's choice of replica rests on."""
        import redis

        lines = []
        for s in self.sentinels:
            c = redis.Redis(host=s.host, port=s.port, password=self.password, socket_timeout=2,
                            decode_responses=True)
            try:
                reps = c.sentinel_slaves(self.master_name)
                seen = "; ".join(f"{r.get('ip')}:{r.get('port')} flags={r.get('flags')} "
                                 f"link={r.get('master-link-status')} info-refresh={r.get('info-refresh')}ms"
                                 for r in reps) or "no replica known"
            except redis.RedisError as exc:
                seen = f"unreachable ({exc})"
            finally:
                c.close()
            lines.append(f"{s.name}: {seen}")
        return "\n".join(lines)

    def logs(self) -> str:
        tails = "\n".join(f"--- {s.name} ---\n{s.log_tail()}" for s in (*self.data, *self.sentinels))
        return f"--- the Sentinels' replicas ---\n{self.replica_views()}\n{tails}"

    def stop(self) -> None:
        for s in (*self.sentinels, *self.data):
            s.stop()


def _wait_answers(server: HaServer, password: str, timeout: float = START_TIMEOUT) -> None:
    import redis

    deadline = time.monotonic() + timeout
    c = redis.Redis(host=server.host, port=server.port, password=password, socket_timeout=2)
    try:
        while True:
            if server.proc is not None and server.proc.poll() is not None:
                raise RedisUnavailable(f"{server.name} exited with {server.proc.returncode}", hint=server.log_tail())
            try:
                if c.ping():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"{server.name} did not answer within {timeout:.0f}s", hint=server.log_tail())
            time.sleep(0.05)
    finally:
        c.close()


def start_sentinel_set(workdir: Path | str, *, replicas: int = 1, master_name: str = "raibid",
                       password: str | None = None, down_after_ms: int = DOWN_AFTER_MS,
                       service_host: str | None = None, service_port: int = 26379) -> SentinelSet:
    """Start the primary, ``replicas`` replicas and three Sentinels; wait until they agree.

    ``service_host``: the first Sentinel listens on that loopback address at ``service_port``
    instead, as a cluster's Service raibid-redis-sentinel would (KEDA on the stack reaches it
    through its hosts file)."""
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        raise RedisUnavailable("redis-server and redis-cli are needed", hint="apt-get install redis-server")
    workdir = Path(workdir)
    password = password or secrets.token_hex(16)
    ports = [free_port() for _ in range(1 + replicas)]
    sentinel_ports = [free_port() for _ in range(3)]
    first = f"127.0.0.1:{ports[0]}"
    if service_host:
        sentinel_ports[0] = service_port
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "REDIS_PASSWORD": password,
            "RAIBID_FIRST_PRIMARY": first, "RAIBID_MASTER_NAME": master_name,
            # One Sentinel stands for the Service: a start asks it who the primary is.
            "RAIBID_SENTINELS": f"{service_host or '127.0.0.1'}:{sentinel_ports[0]}", "RAIBID_ANNOUNCE": "127.0.0.1",
            "RAIBID_BIND": "127.0.0.1"}
    data = [HaServer(f"redis-{i}", port, workdir / f"redis-{i}", "redis-start.sh",
                     {**base, "RAIBID_PORT": str(port), "RAIBID_DATA": str(workdir / f"redis-{i}")})
            for i, port in enumerate(ports)]
    sentinels = [HaServer(f"sentinel-{i}", port, workdir / f"sentinel-{i}", "sentinel-start.sh",
                          {**base, "RAIBID_PORT": str(port), "RAIBID_DATA": str(workdir / f"sentinel-{i}"),
                           "RAIBID_DOWN_AFTER_MS": str(down_after_ms),
                           "RAIBID_FAILOVER_TIMEOUT_MS": str(FAILOVER_TIMEOUT_MS),
                           **({"RAIBID_BIND": service_host, "RAIBID_ANNOUNCE": service_host}
                              if service_host and i == 0 else {})},
                          host=service_host if service_host and i == 0 else "127.0.0.1")
                 for i, port in enumerate(sentinel_ports)]
    ha = SentinelSet(password, master_name, data, sentinels)
    try:
        # Sentinels first (as pods may): the data servers' start then gets an answer at once.
        for s in (*sentinels, *data):
            s.start()
        for s in (*sentinels, *data):
            _wait_answers(s, password)
        ha.wait_ready(replicas)
    except BaseException:
        ha.stop()
        raise
    return ha
