"""Fixtures: a real redis-server on a free loopback port (see conftest.py).

``redis_server`` is one server per test module (starting one costs ~50 ms, but a module's
tests share it and flush between tests); ``fresh_redis`` is a server of the test's own, for
tests that crash or restart Redis.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from raibid_gitops.devstack.redis_server import RedisServer, start_redis


def _need_binary() -> None:
    # A missing component is a failure, never a skip: a suite that silently skips its Redis
    # tests proves nothing about the queue.
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does it)", pytrace=False)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    _need_binary()
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer):
    from raibid_gitops.clients.redis import connect

    client = connect(redis_server.url, password=redis_server.password)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def fresh_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    _need_binary()
    server = start_redis(tmp_path_factory.mktemp("redis-own"))
    yield server
    server.stop(kill=True)


# --- the agent's side: a kubelet-style settings directory and agent processes ------------

import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from raibid_agent.volume_writer import kubelet_write  # noqa: E402 - re-exported for tests

#: Settings for agent tests: short heartbeat and claim times so take-overs happen in seconds
#: (claimIdleSeconds has a floor of 5 in the schema), and a no-op default pipeline.
FAST_SETTINGS = """\
queue:
  claimIdleSeconds: 5
  heartbeatSeconds: 1
  maxDeliveries: 3
agents:
  idleTimeoutSeconds: 3
  defaultPipeline:
    - name: noop
      run: "true"
"""


class AgentPool:
    """Agent subprocesses of one test; every one still running is killed at teardown."""

    def __init__(self, server: RedisServer, settings_dir: Path, logdir: Path) -> None:
        self.server = server
        self.settings_dir = settings_dir
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self._n = 0

    def spawn(self, *extra: str, agent_id: str | None = None, once: bool = False) -> subprocess.Popen[bytes]:
        self._n += 1
        agent_id = agent_id or f"agent-{self._n}"
        log = open(self.logdir / f"{agent_id}.log", "ab")
        env = dict(os.environ, RAIBID_REDIS_PASSWORD=self.server.password, PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "raibid_agent.main", "--settings-dir", str(self.settings_dir),
               "--redis-url", self.server.url, "--agent-id", agent_id, "--gitea-token-file", "/nonexistent",
               *extra]
        if once:
            cmd.append("--once")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        proc.agent_id = agent_id  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def log_text(self, agent_id: str) -> str:
        return (self.logdir / f"{agent_id}.log").read_text(errors="replace")

    def all_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob("*.log")))

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def settings_dir(tmp_path: Path) -> Path:
    d = tmp_path / "settings"
    kubelet_write(d, {"settings.yaml": FAST_SETTINGS})
    return d


@pytest.fixture
def agents(redis_server: RedisServer, settings_dir: Path, tmp_path: Path) -> Iterator[AgentPool]:
    logdir = tmp_path / "agent-logs"
    logdir.mkdir()
    pool = AgentPool(redis_server, settings_dir, logdir)
    yield pool
    pool.stop_all()


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition",  # type: ignore[no-untyped-def]
               detail=None):
    """Poll ``predicate`` until truthy; fail the test naming ``what`` after ``timeout`` s, with
    ``detail()`` (what the system looked like then) when given."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}" + (f"\n{detail()}" if detail else ""))
        time.sleep(interval)
