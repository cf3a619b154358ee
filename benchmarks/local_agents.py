"""Shared by the benchmark scripts: a throw-away Redis, a kubelet-style settings directory and
agent processes, all on this machine. Not a benchmark itself."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from raibid_agent.volume_writer import kubelet_write
from raibid_gitops.devstack.redis_server import RedisServer, start_redis

#: Settings for benchmarks: a no-op pipeline; heartbeat 1 s so settings changes and agent
#: state show quickly (the hash is also pushed at once on a change).
BENCH_SETTINGS = """\
queue:
  claimIdleSeconds: 30
  heartbeatSeconds: 1
  maxLen: 100000
agents:
  idleTimeoutSeconds: 60
  logMaxLen: 1000
  defaultPipeline:
    - name: noop
      run: "true"
"""


class Bench:
    def __init__(self, root: Path, server: RedisServer) -> None:
        self.root = root
        self.server = server
        self.settings_dir = root / "settings"
        self.procs: list[subprocess.Popen[bytes]] = []
        kubelet_write(self.settings_dir, {"settings.yaml": BENCH_SETTINGS})

    def client(self):  # type: ignore[no-untyped-def]
        from raibid_gitops.clients.redis import connect

        return connect(self.server.url, password=self.server.password)

    def agent(self, agent_id: str, *extra: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, RAIBID_REDIS_PASSWORD=self.server.password)
        log = open(self.root / f"{agent_id}.log", "ab")
        args = list(extra) or ["--settings-dir", str(self.settings_dir)]
        proc = subprocess.Popen([sys.executable, "-m", "raibid_agent.main", *args, "--redis-url", self.server.url,
                                 "--agent-id", agent_id, "--log-level", "WARNING"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append(proc)
        return proc

    def wait_agents(self, ids: list[str], timeout: float = 60) -> None:
        from raibid_gitops import contract as c

        client = self.client()
        deadline = time.monotonic() + timeout
        while not all(client.exists(c.agent_key(a)) for a in ids):
            if time.monotonic() > deadline:
                raise SystemExit(f"agents did not start; see {self.root}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every agent started so far (SIGTERM: they drain), and forget them."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []


@contextmanager
def bench() -> Iterator[Bench]:
    with tempfile.TemporaryDirectory(prefix="raibid-bench-") as tmp:
        root = Path(tmp)
        server = start_redis(root / "redis")
        b = Bench(root, server)
        try:
            yield b
        finally:
            b.stop()
            server.stop()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: list[float]) -> str:
    return (f"p50 {percentile(values, 50) * 1000:8.2f} ms   p99 {percentile(values, 99) * 1000:8.2f} ms   "
            f"mean {statistics.fmean(values) * 1000:8.2f} ms")


def side_by_side(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n{title}")
    print("-" * len(title))
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")
