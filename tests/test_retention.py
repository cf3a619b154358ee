"""Bounded Redis: finished jobs and their logs are removed by queue.retention, unfinished jobs
never are. Real redis-server, real agent code (the worker's read/handle path and the scripts)."""

from __future__ import annotations

import json

import pytest

from raibid_agent.runner import Runner
from raibid_agent.settings_source import SettingsHolder
from raibid_agent.worker import Entry, Worker
from raibid_gitops import contract as c
from raibid_gitops.queue import JobSpec, get_job, submit
from raibid_gitops.queue.dead_letters import list_dead, retry
from raibid_gitops.queue.scripts import scripts_for

pytestmark = pytest.mark.redis

NOCHECKOUT = JobSpec("raibid/hello", "main", checkout=c.CHECKOUT_NONE)
KEEP = 50


def settings_text(**retention) -> str:
    data = {
        # claimIdleSeconds: an hour, so the "stuck" consumer's running jobs are not taken over.
        "queue": {"maxLen": 100, "claimIdleSeconds": 3600, "heartbeatSeconds": 1,
                  "retention": {"finishedJobs": KEEP, "finishedJobSeconds": 3600, "deadLetters": 10, **retention}},
        # 20 log lines a job, so that a kept job costs memory one can see.
        "agents": {"logMaxLen": 100, "defaultPipeline": [{"name": "chatty", "run": "seq 1 20"}]},
    }
    return json.dumps(data)


def make_worker(client, text: str) -> Worker:
    holder = SettingsHolder()
    assert holder.offer(text, "test", "settings.yaml") is not None
    return Worker(client, holder, "retention-agent", Runner(token_file=None))


def run_next(w: Worker) -> str | None:
    snap = w.holder.current()
    entry = w.next_entry(snap)
    assert entry is not None
    return w.handle(snap, entry)


def used_memory(client) -> int:
    return int(client.info("memory")["used_memory"])


def job_keys(client) -> set[str]:
    return {k for k in client.scan_iter(match="raibid:job:*", count=1000)}


def test_memory_levels_off_and_unfinished_jobs_are_kept(redis_client, capsys):
    w = make_worker(redis_client, settings_text())
    settings = w.holder.current().settings
    q = settings.queue

    # Unfinished jobs: three running under an agent that stalled (pending, never finished).
    running = [submit(redis_client, settings, NOCHECKOUT).job_id for _ in range(3)]
    got = redis_client.xreadgroup(q.consumer_group, "stalled-agent", {q.stream: ">"}, count=3)
    for eid, fields in got[0][1]:
        status, _ = scripts_for(redis_client).start(
            keys=[c.job_key(fields[c.FIELD_JOB_ID]), q.stream, c.job_logs_key(fields[c.FIELD_JOB_ID])],
            args=[q.consumer_group, eid, "stalled-agent", "1", "sha256:x", 100])
        assert status == "ok"

    samples: dict[int, int] = {0: used_memory(redis_client)}
    for n in range(1, 601):
        submit(redis_client, settings, NOCHECKOUT)
        assert run_next(w) == c.STATE_SUCCEEDED
        if n % 50 == 0:
            samples[n] = used_memory(redis_client)
            # Never more finished jobs than kept, at any point.
            assert redis_client.zcard(c.FINISHED_INDEX) <= KEEP

    # Unfinished jobs submitted last: the submit scripts run retention too.
    queued = [submit(redis_client, settings, NOCHECKOUT).job_id for _ in range(5)]

    # Memory levels off: once KEEP jobs are kept, 450 more jobs add less than a quarter of
    # what the first KEEP added. Without retention they would add 9 times as much. What still
    # grows a little (~80 B a job) is the job stream itself: it is never trimmed past the oldest
    # pending entry (the stalled agent's), by design, until that entry is taken over after
    # queue.claimIdleSeconds.
    first = samples[50] - samples[0]
    plateau = [samples[n] for n in range(150, 601, 50)]
    with capsys.disabled():
        print("\nused_memory by finished jobs:", {n: f"{m / 1024:.0f} KiB" for n, m in samples.items()},
              f"(job stream: {redis_client.xlen(q.stream)} entries, held by the pending ones)")
    assert first > 0
    assert max(plateau) - min(plateau) < first / 4, samples

    # Every unfinished job is there, untouched, with no expiry.
    for job_id in running:
        assert get_job(redis_client, job_id).state == c.STATE_RUNNING
        assert redis_client.ttl(c.job_key(job_id)) == -1
    for job_id in queued:
        assert get_job(redis_client, job_id).state == c.STATE_QUEUED
        assert redis_client.ttl(c.job_key(job_id)) == -1
    assert redis_client.zscore(c.JOBS_INDEX, queued[-1]) is not None
    assert redis_client.xpending(q.stream, q.consumer_group)["pending"] == 3

    # What is kept: KEEP finished jobs (record + logs) and the 8 unfinished ones.
    keys = job_keys(redis_client)
    assert len([k for k in keys if not k.endswith(":logs")]) == KEEP + 8
    assert redis_client.zcard(c.JOBS_INDEX) == KEEP + 8
    # A kept finished job expires by itself too (the backstop when no more jobs come).
    newest = redis_client.zrange(c.FINISHED_INDEX, -1, -1)[0]
    assert 0 < redis_client.ttl(c.job_key(newest)) <= 3600
    assert 0 < redis_client.ttl(c.job_logs_key(newest)) <= 3600


def test_old_finished_jobs_go_by_age(redis_client, monkeypatch):
    w = make_worker(redis_client, settings_text(finishedJobSeconds=60))
    settings = w.holder.current().settings
    old = submit(redis_client, settings, NOCHECKOUT).job_id
    assert run_next(w) == c.STATE_SUCCEEDED
    assert redis_client.zcard(c.FINISHED_INDEX) == 1
    # Two minutes later (the producer's clock), the next submit removes it: past 60 s.
    import raibid_gitops.queue.jobs as jobs

    real = jobs.time.time
    monkeypatch.setattr(jobs.time, "time", lambda: real() + 120)
    fresh = submit(redis_client, settings, NOCHECKOUT).job_id
    assert redis_client.exists(c.job_key(old), c.job_logs_key(old)) == 0
    assert redis_client.zscore(c.JOBS_INDEX, old) is None and redis_client.zcard(c.FINISHED_INDEX) == 0
    assert get_job(redis_client, fresh).state == c.STATE_QUEUED


def test_dead_letters_are_capped_and_a_retried_job_is_unfinished_again(redis_client):
    w = make_worker(redis_client, settings_text())
    snap = w.holder.current()
    settings = snap.settings
    q = settings.queue
    # A job dead-lettered as the worker does it: its record is final, expiring, in the index.
    job_id = submit(redis_client, settings, NOCHECKOUT).job_id
    eid, fields = redis_client.xreadgroup(q.consumer_group, w.agent_id, {q.stream: ">"}, count=1)[0][1][0]
    w._dead_letter(snap, Entry(eid, fields, 4, False), "delivered 4 times")
    assert get_job(redis_client, job_id).state == c.STATE_DEAD
    assert redis_client.ttl(c.job_key(job_id)) > 0 and redis_client.zscore(c.FINISHED_INDEX, job_id) is not None

    # Retried: queued again, so no longer subject to retention.
    retry(redis_client, settings, job_id)
    assert get_job(redis_client, job_id).state == c.STATE_QUEUED
    assert redis_client.ttl(c.job_key(job_id)) == -1 and redis_client.ttl(c.job_logs_key(job_id)) == -1
    assert redis_client.zscore(c.FINISHED_INDEX, job_id) is None

    # Malformed entries (no job id) go straight to the dead-letter stream: 250 of them.
    for i in range(250):
        redis_client.xadd(q.stream, {"junk": str(i)})
    snap = w.holder.current()
    done = 0
    while True:
        entry = w.next_entry(snap)
        if entry is None:
            break
        w.handle(snap, entry)
        done += 1
    assert done == 251  # the retried job and the 250 malformed entries
    # MAXLEN ~ trims whole stream nodes (100 entries each): near the cap, never unbounded.
    assert redis_client.xlen(q.dead_letter_stream) <= q.retention.dead_letters + 100
    assert all(d.reason.startswith("malformed entry") for d in list_dead(redis_client, settings, limit=5))


def test_retried_job_whose_record_was_removed_gets_one_again(redis_client):
    w = make_worker(redis_client, settings_text())
    snap = w.holder.current()
    settings = snap.settings
    q = settings.queue
    job_id = submit(redis_client, settings, JobSpec("raibid/hello", "main", commit="abc1234")).job_id
    eid, fields = redis_client.xreadgroup(q.consumer_group, w.agent_id, {q.stream: ">"}, count=1)[0][1][0]
    w._dead_letter(snap, Entry(eid, fields, 4, False), "delivered 4 times")
    redis_client.delete(c.job_key(job_id), c.job_logs_key(job_id))  # as retention would
    retry(redis_client, settings, job_id)
    job = get_job(redis_client, job_id)
    assert (job.state, job.repo, job.ref, job.commit) == (c.STATE_QUEUED, "raibid/hello", "main", "abc1234")
