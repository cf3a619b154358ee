"""1,000 jobs through 4 agents while agents are SIGKILLed at random.

What it checks: nothing is lost (every job succeeds, nothing stays pending or goes to the dead
letters) and every job has exactly one final status (one "finished:" line). Delivery is
at-least-once, so a job *can* run twice: when its agent is killed mid-run, or when it is taken
over from an agent that stalled past queue.claimIdleSeconds. The re-runs are counted against
those causes: no job runs again without one.
"""

from __future__ import annotations

import random
import signal
import time

import pytest
from fixtures_redis import FAST_SETTINGS, AgentPool

from raibid_gitops import contract as c
from raibid_gitops.queue import JobSpec, submit
from raibid_gitops.settings import load_text

pytestmark = pytest.mark.redis

JOBS = 1000
AGENTS = 4
KILLS = 8
#: Kills that must land before the batch is done. Under load the 1,000 no-op jobs can finish
#: before all KILLS are made (agents restart slowly, kills only hit busy agents); half of them
#: still proves repeated take-overs, without making the test a race against the machine.
MIN_KILLS = KILLS // 2
#: Seconds between kills: they land while the batch runs (~10 s on 2 cores).
KILL_EVERY = 0.25


def test_random_kills_lose_nothing(redis_client, agents: AgentPool):
    settings = load_text(FAST_SETTINGS)
    q = settings.queue
    spec = JobSpec("raibid/hello", "main", checkout=c.CHECKOUT_NONE)
    ids = [submit(redis_client, settings, spec).job_id for _ in range(JOBS)]
    rng = random.Random(6)  # a fixed seed: a failure can be replayed
    live = [agents.spawn() for _ in range(AGENTS)]

    def states() -> list[str | None]:
        pipe = redis_client.pipeline(transaction=False)
        for j in ids:
            pipe.hget(c.job_key(j), c.REC_STATE)
        return pipe.execute()

    started = time.monotonic()
    kills = 0
    while True:
        done = sum(s in c.FINAL_STATES for s in states())
        if done == JOBS:
            break
        assert time.monotonic() - started < 150, f"only {done}/{JOBS} jobs final after 150 s"
        if kills < KILLS:
            time.sleep(KILL_EVERY)
            # Kill an agent with a job in flight (a delivered, unacknowledged entry), so every
            # kill tests a take-over rather than hitting an agent that is still starting.
            busy = [p for p in live if redis_client.xpending_range(
                q.stream, q.consumer_group, min="-", max="+", count=1, consumername=p.agent_id)]
            if not busy:
                continue
            victim = rng.choice(busy)
            live.remove(victim)
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            kills += 1
            live.append(agents.spawn())
        else:
            time.sleep(0.5)

    final = states()
    assert all(s == c.STATE_SUCCEEDED for s in final), {s: final.count(s) for s in set(final)}
    # Exactly one final status each: the "finished:" log line is written atomically with it.
    pipe = redis_client.pipeline(transaction=False)
    for j in ids:
        pipe.xrange(c.job_logs_key(j))
    for j, entries in zip(ids, pipe.execute(), strict=True):
        finished = [f for _, f in entries if f[c.LOG_LINE].startswith(c.LOG_FINISHED_PREFIX)]
        assert len(finished) == 1, f"job {j} finished {len(finished)} times"
    assert redis_client.xpending(q.stream, q.consumer_group)["pending"] == 0
    (group,) = redis_client.xinfo_groups(q.stream)
    assert group["lag"] == 0
    assert redis_client.xlen(q.dead_letter_stream) == 0
    assert kills >= MIN_KILLS, f"only {kills} kills landed before the batch finished"
    logs = agents.all_logs()
    # The kills did hit jobs in flight: their entries were taken over by other agents.
    assert "took over entry" in logs
    # Every attempt beyond the first has a cause: a kill (at most one running job each), or a
    # take-over from a live but stalled agent, which then logs that its attempt was dropped.
    pipe = redis_client.pipeline(transaction=False)
    for j in ids:
        pipe.hget(c.job_key(j), c.REC_ATTEMPT)
    reruns = sum(int(a) - 1 for a in pipe.execute())
    stolen = logs.count("was taken over by another agent; not recording a result") + logs.count(
        ": result not stored (")
    assert reruns <= kills + stolen, \
        f"{reruns} re-runs, but only {kills} kills and {stolen} take-overs from live agents"
