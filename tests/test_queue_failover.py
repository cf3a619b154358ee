"""The queue survives losing its Redis primary (queue.mode: sentinel), on real processes.

A primary, a replica and three Sentinels (`redis-server --sentinel`) on loopback, started by the
very scripts the manifests run (base/redis-sentinel/*.sh); four real `raibid_agent.main`
processes reaching Redis through the Sentinels (`redis+sentinel://`); 500 jobs, the primary
SIGKILLed mid-run. The Sentinels promote the replica, the agents reconnect, the killed server
comes back (as its pod would) and rejoins as a replica. Every job finishes exactly once — one
stored result (one `finished:` log line) and one run of its pipeline — and nothing is left
pending; a submit during the failover succeeds or fails with an error naming the job, never
silently.

The waits are bounded so that a hang fails the test; no assertion is about how long anything took.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures_redis import AgentPool, kubelet_write, wait_until

from raibid_gitops import contract as c
from raibid_gitops import settings as sm
from raibid_gitops.clients.redis import connect
from raibid_gitops.devstack.redis_ha import SentinelSet, start_sentinel_set
from raibid_gitops.errors import RedisUnavailable
from raibid_gitops.queue import JobSpec, get_job, stats, submit
from raibid_gitops.queue.jobs import read_logs

JOBS = 500
AGENTS = 4
#: Jobs submitted before the agents start; the rest are submitted while they work, through
#: the failover.
FIRST_BATCH = 250
#: The primary is killed once this many jobs have finished.
KILL_AFTER = 150
#: Bounds on the whole run (a hang fails the test, it measures nothing).
RUN_TIMEOUT = 300


@dataclass(frozen=True)
class _Server:
    """What AgentPool needs of a server: the URL agents get, and the password."""

    url: str
    password: str


def _settings_text(ha: SentinelSet, runs: Path) -> str:
    # claimIdleSeconds well above a failover's few seconds: a live agent's job is not taken
    # over while its heartbeats cannot reach any primary.
    return f"""\
queue:
  mode: sentinel
  claimIdleSeconds: 30
  heartbeatSeconds: 2
  sentinel:
    addresses: {ha.sentinel_addresses}
    masterName: {ha.master_name}
    replicas: 1
    ackReplicas: 1
    ackTimeoutSeconds: 2
agents:
  idleTimeoutSeconds: 5
  defaultPipeline:
    - name: run
      run: echo "$RAIBID_JOB_ID" >> {runs}
"""


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    try:
        ha = start_sentinel_set(tmp_path / "ha", replicas=1)
    except RedisUnavailable as exc:
        pytest.fail(f"could not start Redis with Sentinels: {exc}", pytrace=False)
    yield ha
    ha.stop()


class Submitter(threading.Thread):
    """Submits jobs one by one and records what each submit said."""

    def __init__(self, url: str, password: str, settings: sm.Settings, n: int) -> None:
        super().__init__(daemon=True)
        self.client = connect(url, settings=settings, password=password)
        self.settings, self.n = settings, n
        self.ok: list[str] = []
        self.not_durable: list[str] = []
        self.failed: list[str] = []  # the error messages
        self.unexpected: list[BaseException] = []

    def run(self) -> None:
        for _ in range(self.n):
            try:
                done = submit(self.client, self.settings, JobSpec("raibid/app", "main", checkout=c.CHECKOUT_NONE))
                self.ok.append(done.job_id)
                if not done.durable:
                    self.not_durable.append(done.job_id)
            except RedisUnavailable as exc:
                self.failed.append(exc.message)
            except BaseException as exc:  # noqa: BLE001 - anything else is a finding
                self.unexpected.append(exc)
            time.sleep(0.02)


def test_a_started_set_can_fail_over_at_once(sentinel_set: SentinelSet) -> None:
    """Ready means every Sentinel already knows the replica, healthy: a Sentinel learns of
    replicas from the primary's INFO every 10 s, and a primary lost before that left the
    Sentinels with nothing to promote (CI: `-failover-abort-no-good-slave` for two minutes)."""
    ha = sentinel_set
    views = ha.replica_views().splitlines()
    assert len(views) == len(ha.sentinels)
    for line in views:
        assert "flags=slave link=ok" in line, ha.replica_views()
    old = ha.primary()
    t0 = time.monotonic()
    ha.by_address(old).kill()
    new = _wait_promotion(ha, old, timeout=60)
    assert new != old
    print(f"promoted {new} {time.monotonic() - t0:.1f} s after killing the primary right after start")


def test_500_jobs_through_a_failover_finish_exactly_once(sentinel_set: SentinelSet, tmp_path: Path) -> None:
    ha = sentinel_set
    runs = tmp_path / "runs.log"
    text = _settings_text(ha, runs)
    settings = sm.load_text(text)
    settings_dir = tmp_path / "settings"
    kubelet_write(settings_dir, {"settings.yaml": text})
    client = connect(ha.url, settings=settings, password=ha.password)

    first = [submit(client, settings, JobSpec("raibid/app", "main", checkout=c.CHECKOUT_NONE)).job_id
             for _ in range(FIRST_BATCH)]
    logdir = tmp_path / "agent-logs"
    logdir.mkdir()
    pool = AgentPool(_Server(ha.url, ha.password), settings_dir, logdir)  # type: ignore[arg-type]
    try:
        for _ in range(AGENTS):
            pool.spawn()
        submitter = Submitter(ha.url, ha.password, settings, JOBS - FIRST_BATCH)
        submitter.start()

        def finished() -> int:
            try:
                return int(client.zcard(c.FINISHED_INDEX))
            except Exception:  # noqa: BLE001 - during the failover: not yet
                return 0

        wait_until(lambda: finished() >= KILL_AFTER, RUN_TIMEOUT, 0.05, "the first jobs to finish")
        old = ha.primary()
        done_at_kill = finished()
        killed_at = time.monotonic()
        ha.by_address(old).kill()

        new = _wait_promotion(ha, old)
        promoted_at = time.monotonic()
        ha.by_address(old).start()  # as its StatefulSet would bring the pod back
        wait_until(lambda: finished() > done_at_kill, 60, 0.1, "a job to finish on the new primary")
        recovered_at = time.monotonic()
        submitter.join(RUN_TIMEOUT)
        assert not submitter.is_alive(), "the submitter hung"
        assert not submitter.unexpected, submitter.unexpected

        submitted = first + submitter.ok
        wait_until(lambda: all(_final(client, j) for j in submitted), RUN_TIMEOUT, 0.5,
                   f"all {len(submitted)} jobs to finish\n{pool.all_logs()[-3000:]}")
        q = settings.queue
        wait_until(lambda: client.xpending(q.stream, q.consumer_group)["pending"] == 0, 60, 0.2,
                   "nothing pending")
        wait_until(lambda: ha.role(ha.by_address(old)) == "slave", 60, 0.2, "the old primary to rejoin as a replica")
        alive = [p for p in pool.procs if p.poll() is None]
    finally:
        pool.stop_all()

    # Every job submitted with success finished exactly once: one result, one run.
    ran = collections.Counter(runs.read_text().split())
    twice = {j: n for j, n in ran.items() if n != 1}
    states = collections.Counter(get_job(client, j).state for j in submitted)
    finished_lines = {j: sum(1 for x in read_logs(client, j) if x.line.startswith(c.LOG_FINISHED_PREFIX))
                      for j in submitted}
    assert states == {c.STATE_SUCCEEDED: len(submitted)}, states
    assert all(n == 1 for n in finished_lines.values()), {j: n for j, n in finished_lines.items() if n != 1}
    assert set(submitted) <= set(ran) and not twice, twice
    # A submit that failed said which job to look for; such a job, if it landed, ran once too.
    for message in submitter.failed:
        assert "may or may not have been queued" in message, message
    assert len(submitted) + len(submitter.failed) == JOBS
    s = stats(client, settings)
    assert s.pending == 0 and s.lag == 0
    # The agents reconnected (none exited), and what stats shows: the new primary, the old one
    # back as its replica, the failover recorded by the first agent to reach the new primary.
    assert len(alive) == AGENTS
    assert s.redis is not None and s.redis.primary == new
    assert [r.address for r in s.redis.replicas] == [old]
    assert s.redis.sentinels == 3 and s.redis.quorum == 2
    assert [(f.old, f.new) for f in s.redis.failovers] == [(old, new)]
    figures = {"jobs": len(submitted), "submits_failed": len(submitter.failed),
               "submits_on_primary_only": len(submitter.not_durable), "kills": 1,
               "kill_to_promotion_s": round(promoted_at - killed_at, 2),
               "kill_to_first_job_after_s": round(recovered_at - killed_at, 2), "duplicate_runs": len(twice)}
    print("failover figures:", json.dumps(figures))


def _wait_promotion(ha: SentinelSet, old: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while True:
        new = _promoted(ha, old)
        if new:
            return new
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for the Sentinels to promote the replica\n{ha.logs()}")
        time.sleep(0.1)


def _promoted(ha: SentinelSet, old: str) -> str | None:
    try:
        now = ha.primary()
    except RedisUnavailable:
        return None
    return now if now != old else None


def _final(client, job_id: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        return get_job(client, job_id).final
    except RedisUnavailable:
        return False


class TestAgentUsesSentinel:
    """`raibid queue` through Sentinel: the CLI takes a redis+sentinel:// URL."""

    def test_cli_submit_and_stats(self, sentinel_set: SentinelSet, tmp_path: Path) -> None:
        ha = sentinel_set
        settings = tmp_path / "settings.yaml"
        settings.write_text(_settings_text(ha, tmp_path / "runs.log"))
        env = {"RAIBID_REDIS_PASSWORD": ha.password, "PATH": "/usr/bin:/bin"}
        import os

        env = {**os.environ, **env}
        base = [sys.executable, "-m", "raibid_gitops.cli", "queue"]
        # No --redis-url: the settings' queue.mode sentinel gives the Sentinels' URL.
        r = subprocess.run([*base, "submit", "--repo", "raibid/app", "--ref", "main", "--no-checkout",
                            "--settings", str(settings)], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([*base, "stats", "--settings", str(settings), "-o", "json"], capture_output=True, text=True,
                           env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert data["length"] == 1 and data["redis"]["mode"] == "sentinel"
        assert data["redis"]["primary"] == ha.primary() and data["redis"]["sentinels"] == 3
        r = subprocess.run([*base, "stats", "--settings", str(settings)], capture_output=True, text=True, env=env,
                           timeout=60)
        assert r.returncode == 0 and "PRIMARY" in r.stdout and ha.primary() in r.stdout, r.stdout + r.stderr


class TestScriptsAreSafeToRepeat:
    """What lets a write be sent again after a lost answer or a failover (redis-py resends a
    command whose connection broke): START only for the entry's owner, FINISH answers
    ``repeat`` for the same result, submit recognises its own job."""

    SETTINGS = sm.defaults()

    def test_start_only_for_the_consumer_the_entry_is_pending_for(self, redis_client):
        from raibid_gitops.queue.scripts import scripts_for

        q = self.SETTINGS.queue
        done = submit(redis_client, self.SETTINGS, JobSpec("a/b", "main"))
        # Delivered to agent-1; agent-2 (say, on a promoted replica that never saw the delivery
        # to it) must not start it.
        (_, [(eid, _)]), = redis_client.xreadgroup(q.consumer_group, "agent-1", {q.stream: ">"}, count=1)
        s = scripts_for(redis_client)
        assert s.start_attempt(self.SETTINGS, done.job_id, eid, "agent-2", 1.0, "h") == ["notowned", ""]
        assert get_job(redis_client, done.job_id).state == c.STATE_QUEUED
        assert s.start_attempt(self.SETTINGS, done.job_id, eid, "agent-1", 1.0, "h") == ["ok", "1"]

    def test_finish_again_is_a_repeat_not_a_second_result(self, redis_client):
        from raibid_gitops.queue.scripts import scripts_for

        q = self.SETTINGS.queue
        done = submit(redis_client, self.SETTINGS, JobSpec("a/b", "main"))
        (_, [(eid, _)]), = redis_client.xreadgroup(q.consumer_group, "agent-1", {q.stream: ">"}, count=1)
        s = scripts_for(redis_client)
        s.start_attempt(self.SETTINGS, done.job_id, eid, "agent-1", 1.0, "h")
        args = (self.SETTINGS, done.job_id, eid, "1", c.STATE_SUCCEEDED, 0, "", 2.0)
        assert s.finish_attempt(*args) == "ok"
        assert s.finish_attempt(*args) == "repeat"
        # Another result for the same attempt is not this one.
        assert s.finish_attempt(self.SETTINGS, done.job_id, eid, "1", c.STATE_FAILED, 1, "", 3.0) == "already"
        lines = [x.line for x in read_logs(redis_client, done.job_id) if x.line.startswith(c.LOG_FINISHED_PREFIX)]
        assert lines == ["finished: succeeded (exit 0)"]

    def test_submit_sent_again_finds_its_own_job(self, redis_client, monkeypatch):
        from raibid_gitops.errors import QueueError

        monkeypatch.setattr(time, "time", lambda: 1_700_000_000.5)
        first = submit(redis_client, self.SETTINGS, JobSpec("a/b", "main"), job_id="j-1")
        again = submit(redis_client, self.SETTINGS, JobSpec("a/b", "main"), job_id="j-1")
        assert again.entry_id == first.entry_id and redis_client.xlen(self.SETTINGS.queue.stream) == 1
        monkeypatch.setattr(time, "time", lambda: 1_700_000_009.5)
        with pytest.raises(QueueError, match="job j-1 already exists"):
            submit(redis_client, self.SETTINGS, JobSpec("a/b", "main"), job_id="j-1")
