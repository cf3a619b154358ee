"""A throw-away redis-server on a free loopback port: for tests, benchmarks and `raibid-devstack up`.

Started the way production runs it where it matters for the queue: AOF on (so a restart keeps
acknowledged results), no RDB snapshots, a random password (so code paths that need one are
exercised), bound to 127.0.0.1 only.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from raibid_gitops.errors import RedisUnavailable

#: How long redis-server may take to accept connections; generous for a loaded 2-core box.
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_loopback_address(port: int) -> str:
    """A 127.x.y.z address (not 127.0.0.1) on which ``port`` is free now.

    A cluster Service listens on its well-known port (Redis: 6379) at an address of its own; a
    host process playing one does the same on a loopback address of its own, so the manifests
    and settings keep the production port. The whole 127.0.0.0/8 block is loopback on Linux.
    """
    import random

    rng = random.Random()
    for _ in range(50):
        host = f"127.{rng.randint(100, 254)}.{rng.randint(0, 254)}.{rng.randint(1, 254)}"
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return host
    raise RedisUnavailable(f"no loopback address with port {port} free after 50 tries")


class _Process:
    """Mutable holder so the dataclass stays frozen while the process is replaced on restart."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None


@dataclass(frozen=True)
class RedisServer:
    """One redis-server; ``url`` carries no password (pass ``password`` separately)."""

    port: int
    password: str
    workdir: Path
    binary: str = "redis-server"
    #: The loopback address it listens on (another 127.x address plays a Service's address).
    host: str = "127.0.0.1"
    _state: _Process = field(default_factory=_Process, compare=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        p = self._state.proc
        return p.pid if p is not None and p.poll() is None else None

    def command(self) -> list[str]:
        return [
            self.binary, "--port", str(self.port), "--bind", self.host,
            "--save", "", "--appendonly", "yes", "--dir", str(self.workdir),
            "--requirepass", self.password,
            # The job stream must never be evicted (an LRU policy can drop it): as in production.
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.workdir / "redis.log"),
        ]

    def start(self) -> None:
        if self.pid is not None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._state.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self) -> None:
        import redis

        deadline = time.monotonic() + START_TIMEOUT
        client = redis.Redis(host=self.host, port=self.port, password=self.password, socket_timeout=2)
        try:
            while True:
                proc = self._state.proc
                if proc is not None and proc.poll() is not None:
                    raise RedisUnavailable(f"redis-server on port {self.port} exited with {proc.returncode}",
                                           hint=f"see {self.workdir / 'redis.log'}")
                try:
                    # LOADING while the AOF is replayed: wait until PING answers.
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise RedisUnavailable(f"redis-server on port {self.port} did not answer within "
                                           f"{START_TIMEOUT:.0f}s",
                                           hint=f"see {self.workdir / 'redis.log'}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, *, kill: bool = False, timeout: float = 15.0) -> None:
        """Stop it; ``kill=True`` is a crash (SIGKILL), otherwise a clean shutdown."""
        proc = self._state.proc
        if proc is None:
            return
        if proc.poll() is None:
            if kill:
                proc.kill()
            else:
                proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._state.proc = None

    def restart(self, *, kill: bool = False) -> None:
        """Stop and start again on the same port and directory (the AOF is replayed)."""
        self.stop(kill=kill)
        self.start()


def start_redis(workdir: Path | str, *, port: int | None = None, password: str | None = None,
                binary: str | None = None, host: str = "127.0.0.1") -> RedisServer:
    """Start redis-server in ``workdir`` on ``host``:``port`` (a free port by default)."""
    exe = binary or shutil.which("redis-server")
    if not exe:
        raise RedisUnavailable("redis-server is not installed", hint="apt-get install redis-server")
    server = RedisServer(port=port or free_port(), password=password or secrets.token_hex(16),
                         workdir=Path(workdir), binary=exe, host=host)
    server.start()
    return server
