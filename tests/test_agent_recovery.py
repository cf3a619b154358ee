"""Agents as real processes: killed mid-job, poisoned, drained, and Redis crashing under them."""

from __future__ import annotations

import signal
import time

import pytest
from fixtures_redis import FAST_SETTINGS, AgentPool, kubelet_write, wait_until

from raibid_gitops import contract as c
from raibid_gitops.clients.redis import connect
from raibid_gitops.queue import JobSpec, get_job, submit
from raibid_gitops.queue.dead_letters import drop, list_dead, retry
from raibid_gitops.queue.jobs import read_logs
from raibid_gitops.settings import load_text

pytestmark = pytest.mark.redis

NOCHECKOUT = JobSpec("raibid/hello", "main", checkout=c.CHECKOUT_NONE)


def with_pipeline(run: str) -> str:
    return FAST_SETTINGS.replace('run: "true"', f"run: {run!r}")


def finished_lines(client, job_id: str) -> list[str]:
    return [line.line for line in read_logs(client, job_id) if line.line.startswith(c.LOG_FINISHED_PREFIX)]


def state(client, job_id: str) -> str:
    return get_job(client, job_id).state


class TestTakeOver:
    def test_sigkill_mid_job_another_agent_finishes_it(self, redis_client, agents: AgentPool, settings_dir):
        """The killed agent's entry goes idle; the next agent claims it after claimIdleSeconds."""
        kubelet_write(settings_dir, {"settings.yaml": with_pipeline("sleep 2")})
        settings = load_text(with_pipeline("sleep 2"))
        done = submit(redis_client, settings, NOCHECKOUT)
        a = agents.spawn(agent_id="victim")
        wait_until(lambda: state(redis_client, done.job_id) == c.STATE_RUNNING, 30, what="the job to start")
        # The heartbeat hash lives a few beats only (heartbeatSeconds 1 here), so a killed agent
        # drops out of `sync --wait-agents` and the TUI by itself.
        assert 0 < redis_client.ttl(c.agent_key("victim")) <= 3
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        agents.spawn(agent_id="rescuer")
        wait_until(lambda: get_job(redis_client, done.job_id).final, 60, what="the job to finish")
        job = get_job(redis_client, done.job_id)
        assert (job.state, job.agent, job.attempt) == (c.STATE_SUCCEEDED, "rescuer", 2)
        assert finished_lines(redis_client, done.job_id) == ["finished: succeeded (exit 0)"]
        assert redis_client.xpending(settings.queue.stream, settings.queue.consumer_group)["pending"] == 0
        assert "took over entry" in agents.log_text("rescuer")
        wait_until(lambda: not redis_client.exists(c.agent_key("victim")), 30,
                   what="the dead agent's heartbeat to expire")


class TestHeartbeat:
    def test_a_job_outliving_claim_idle_is_not_taken_from_its_live_agent(self, redis_client, agents: AgentPool,
                                                                          settings_dir):
        """A job running well past queue.claimIdleSeconds (5 s here) while another agent polls
        XAUTOCLAIM: the owner's heartbeat keeps resetting the entry's idle time, so the job runs
        once, on its first agent."""
        text = with_pipeline("sleep 9")  # claimIdleSeconds 5 in FAST_SETTINGS, plus a margin
        kubelet_write(settings_dir, {"settings.yaml": text})
        settings = load_text(text)
        done = submit(redis_client, settings, NOCHECKOUT)
        agents.spawn(agent_id="owner")
        wait_until(lambda: state(redis_client, done.job_id) == c.STATE_RUNNING, 30, what="the job to start")
        agents.spawn(agent_id="poacher")
        wait_until(lambda: redis_client.exists(c.agent_key("poacher")), 30, what="the second agent's heartbeat")
        wait_until(lambda: get_job(redis_client, done.job_id).final, 60, what="the job to finish")
        job = get_job(redis_client, done.job_id)
        assert (job.state, job.agent, job.attempt) == (c.STATE_SUCCEEDED, "owner", 1)
        assert "took over entry" not in agents.log_text("poacher")
        assert finished_lines(redis_client, done.job_id) == ["finished: succeeded (exit 0)"]


class TestPoison:
    def test_dead_letter_after_max_deliveries(self, redis_client, agents: AgentPool, settings_dir):
        """A job whose step kills its agent is run maxDeliveries (3) times, then dead-lettered."""
        text = with_pipeline("kill -9 $PPID")
        kubelet_write(settings_dir, {"settings.yaml": text})
        settings = load_text(text)
        done = submit(redis_client, settings, NOCHECKOUT)
        deadline = time.monotonic() + 80
        while not get_job(redis_client, done.job_id).final:
            assert time.monotonic() < deadline, "poison job was never dead-lettered"
            agents.spawn(once=True).wait(60)
        job = get_job(redis_client, done.job_id)
        assert job.state == c.STATE_DEAD and "delivered 4 times" in job.reason
        assert job.attempt == 3  # run maxDeliveries times, then moved
        (dead,) = list_dead(redis_client, settings)
        assert dead.job_id == done.job_id and dead.deliveries == 4 and "maxDeliveries=3" in dead.reason
        assert redis_client.xpending(settings.queue.stream, settings.queue.consumer_group)["pending"] == 0

        # dead retry: a new entry, state queued, the dead letter gone; drop after a second death.
        retry(redis_client, settings, done.job_id)
        assert state(redis_client, done.job_id) == c.STATE_QUEUED and not list_dead(redis_client, settings)
        redis_client.hset(c.job_key(done.job_id), c.REC_STATE, c.STATE_DEAD)  # pretend it died again
        redis_client.xadd(settings.queue.dead_letter_stream, {c.FIELD_JOB_ID: done.job_id, c.FIELD_REASON: "x"})
        drop(redis_client, settings, done.job_id)
        assert not list_dead(redis_client, settings)

    def test_malformed_entry_goes_straight_to_dead_letters(self, redis_client, agents: AgentPool):
        settings = load_text(FAST_SETTINGS)
        submit(redis_client, settings, NOCHECKOUT)  # creates the group
        redis_client.xadd(settings.queue.stream, {"garbage": "1"})
        agents.spawn(once=True).wait(60)
        agents.spawn(once=True).wait(60)
        reasons = [d.reason for d in list_dead(redis_client, settings)]
        assert reasons == ["malformed entry: no job_id field"]


class TestDrain:
    def test_sigterm_finishes_running_job_takes_no_new_one(self, redis_client, agents: AgentPool, settings_dir):
        text = with_pipeline("sleep 2; echo done")
        kubelet_write(settings_dir, {"settings.yaml": text})
        settings = load_text(text)
        first = submit(redis_client, settings, NOCHECKOUT)
        a = agents.spawn(agent_id="drainer")
        wait_until(lambda: state(redis_client, first.job_id) == c.STATE_RUNNING, 30, what="the job to start")
        a.send_signal(signal.SIGTERM)
        second = submit(redis_client, settings, NOCHECKOUT)
        assert a.wait(60) == 0
        assert state(redis_client, first.job_id) == c.STATE_SUCCEEDED
        assert state(redis_client, second.job_id) == c.STATE_QUEUED
        # The second job is still there for the next agent: undelivered, or handed back.
        assert redis_client.xpending(settings.queue.stream, settings.queue.consumer_group)["pending"] == 0
        agents.spawn(once=True).wait(60)
        assert state(redis_client, second.job_id) == c.STATE_SUCCEEDED

    def test_once_exits_zero_when_idle(self, agents: AgentPool):
        started = time.monotonic()
        assert agents.spawn(once=True).wait(60) == 0
        assert time.monotonic() - started >= 3  # agents.idleTimeoutSeconds in FAST_SETTINGS


class TestRedisRestart:
    def test_aof_restart_loses_no_acknowledged_result(self, fresh_redis, settings_dir, tmp_path):
        """Crash Redis (SIGKILL) while agents work; every result acked before the last AOF fsync
        survives, and every job still reaches exactly one final state."""
        text = with_pipeline("sleep 0.05")
        kubelet_write(settings_dir, {"settings.yaml": text})
        settings = load_text(text)
        client = connect(fresh_redis.url, password=fresh_redis.password)
        ids = [submit(client, settings, NOCHECKOUT).job_id for _ in range(150)]
        logdir = tmp_path / "logs"
        logdir.mkdir()
        pool = AgentPool(fresh_redis, settings_dir, logdir)
        try:
            pool.spawn()
            pool.spawn()

            def finals():
                pipe = client.pipeline(transaction=False)
                for j in ids:
                    pipe.hget(c.job_key(j), c.REC_STATE)
                return dict(zip(ids, pipe.execute(), strict=True))

            wait_until(lambda: sum(s in c.FINAL_STATES for s in finals().values()) >= 40, 60, what="40 jobs done")
            before = {j: s for j, s in finals().items() if s in c.FINAL_STATES}
            time.sleep(1.5)  # appendfsync everysec: what was acked 1 s ago is on disk
            fresh_redis.restart(kill=True)
            client = connect(fresh_redis.url, password=fresh_redis.password)
            after = finals()
            lost = [j for j, s in before.items() if after[j] != s]
            assert not lost, f"{len(lost)} acknowledged results lost"
            wait_until(lambda: all(s in c.FINAL_STATES for s in finals().values()), 90, interval=0.5,
                       what="every job to finish after the restart")
            for j in ids:
                assert len(finished_lines(client, j)) == 1, j
            assert all(s == c.STATE_SUCCEEDED for s in finals().values())
        finally:
            pool.stop_all()
