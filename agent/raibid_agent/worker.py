"""The agent's loop on the job stream: take over, read, run, store the result, ack.

Order of one iteration, and why:

1. XAUTOCLAIM entries idle longer than ``queue.claimIdleSeconds`` (their agent died: a live
   one resets the idle time with its heartbeat). Orphans go first, they have waited longest.
2. Otherwise XREADGROUP one new entry (blocking briefly, so a drain is noticed quickly).
3. An entry delivered more than ``queue.maxDeliveries`` times is moved to the dead-letter
   stream with the reason, instead of being run again (a job that kills its agent would
   otherwise take the pool down forever).
4. The start script marks the job running (or acks a stale/final entry without running it).
5. The result and the XACK are written by one script; if another agent took the job over
   meanwhile, this agent's result is refused and nothing is acked (exactly one final status).

Each job runs with the settings snapshot current when it started; a new snapshot applies
from the next job on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from raibid_agent.heartbeat import Heartbeat
from raibid_agent.logsink import LogSink
from raibid_agent.metrics import Metrics
from raibid_agent.runner import LOST, CancelSignal, JobSpec, Outcome, Runner
from raibid_agent.settings_source import SettingsHolder, Snapshot
from raibid_gitops import contract as c
from raibid_gitops.clients.redis import StreamReads, acks, redis_errors
from raibid_gitops.errors import RedisUnavailable
from raibid_gitops.queue.jobs import ensure_group
from raibid_gitops.queue.scripts import scripts_for

if TYPE_CHECKING:  # pragma: no cover
    import redis

log = logging.getLogger("raibid.agent.worker")

#: XREADGROUP BLOCK: an entry arriving wakes us at once, so this only bounds how fast a
#: drain (SIGTERM) or a settings change of the stream name is noticed.
BLOCK_MS = 1000
#: Back-off while Redis is unreachable: quick first retries (a restart takes ~1 s), then slower.
RETRY_MIN, RETRY_MAX = 0.2, 5.0
#: How long a finished job's result is retried against an unreachable Redis before giving up
#: (the entry then stays pending and is re-run elsewhere: at-least-once, never lost).
FINISH_RETRY_SECONDS = 600.0
#: How long a stored result waits for queue.sentinel.ackReplicas replicas to confirm it before
#: the agent moves on (it is on the primary, with AOF): a pool whose replicas are all down keeps
#: working, each agent held this long per job at most.
FINISH_ACK_SECONDS = 60.0


@dataclass(frozen=True)
class Entry:
    id: str
    fields: dict[str, str]
    deliveries: int
    claimed: bool


class Worker:
    def __init__(self, client: redis.Redis, holder: SettingsHolder, agent_id: str, runner: Runner,
                 metrics: Metrics | None = None, *, once: bool = False) -> None:
        self.client = client
        self.holder = holder
        self.agent_id = agent_id
        self.runner = runner
        self.metrics = metrics or Metrics()
        self.once = once
        self.draining = threading.Event()
        #: Set once the first read of the stream returned (an entry taken, or none there): the
        #: agent's readiness (see metrics.py).
        self.reading = threading.Event()
        self.scripts = scripts_for(client)
        self.heartbeat = Heartbeat(client, agent_id, holder)
        holder.on_change(lambda _snap, _rej: self.heartbeat.kick())
        self.jobs_done = 0
        self._groups_ready: set[tuple[str, str]] = set()
        self._claim_cursor: dict[str, str] = {}

    # -- reading --------------------------------------------------------------------------

    def _ensure_group(self, snap: Snapshot) -> None:
        q = snap.settings.queue
        if (q.stream, q.consumer_group) not in self._groups_ready:
            ensure_group(self.client, snap.settings)
            self._groups_ready.add((q.stream, q.consumer_group))

    def _claim(self, snap: Snapshot) -> Entry | None:
        q = snap.settings.queue
        with redis_errors(self.client, f"claiming idle entries of {q.stream}"):
            # XAUTOCLAIM looks at no more than 10 x COUNT pending entries per call; keeping the
            # cursor between calls walks the whole pending list, so an orphan behind many live
            # jobs is still found.
            cursor = self._claim_cursor.get(q.stream, "0-0")
            res = self.client.xautoclaim(q.stream, q.consumer_group, self.agent_id,
                                         min_idle_time=q.claim_idle_seconds * 1000, start_id=cursor, count=1)
            self._claim_cursor[q.stream] = str(res[0])
            claimed = res[1]
            if not claimed:
                return None
            eid, fields = claimed[0]
            detail = self.client.xpending_range(q.stream, q.consumer_group, min=eid, max=eid, count=1)
        deliveries = int(detail[0]["times_delivered"]) if detail else 1
        self.metrics.claimed.inc()
        log.info("took over entry %s (job %s, delivery %d)", eid, (fields or {}).get(c.FIELD_JOB_ID), deliveries)
        return Entry(eid, fields or {}, deliveries, True)

    def _read(self, snap: Snapshot) -> Entry | None:
        q = snap.settings.queue
        with redis_errors(self.client, f"reading {q.stream}"):
            got = cast(StreamReads, self.client.xreadgroup(q.consumer_group, self.agent_id, {q.stream: ">"},
                                                           count=1, block=BLOCK_MS))
        for _stream, entries in got or []:
            for eid, fields in entries:
                return Entry(eid, fields or {}, 1, False)
        return None

    def next_entry(self, snap: Snapshot) -> Entry | None:
        self._ensure_group(snap)
        return self._claim(snap) or self._read(snap)

    # -- handling -------------------------------------------------------------------------

    def _dead_letter(self, snap: Snapshot, entry: Entry, reason: str) -> None:
        q = snap.settings.queue
        job_id = entry.fields.get(c.FIELD_JOB_ID, "")
        flat = _flatten(entry.fields)
        with redis_errors(self.client, f"dead-lettering entry {entry.id}"):
            self.scripts.dead_letter(
                keys=[q.stream, q.dead_letter_stream, c.job_key(job_id or "-"), c.job_logs_key(job_id or "-"),
                      c.JOBS_INDEX, c.FINISHED_INDEX],
                args=[q.consumer_group, entry.id, reason, entry.deliveries, f"{time.time():.6f}",
                      snap.settings.agents.log_max_len, job_id, q.retention.finished_job_seconds,
                      q.retention.finished_jobs, q.retention.dead_letters, *flat],
            )
        self.metrics.dead_letters.inc()
        log.error("entry %s (job %s) moved to %s: %s", entry.id, job_id or "?", q.dead_letter_stream, reason)

    def requeue(self, snap: Snapshot, entry: Entry) -> None:
        """Give back an entry read just as a drain began: a new entry, the old one acked."""
        q = snap.settings.queue
        job_id = entry.fields.get(c.FIELD_JOB_ID, "")
        flat = _flatten(entry.fields)
        with redis_errors(self.client, f"requeueing entry {entry.id}"):
            self.scripts.requeue(keys=[q.stream, c.job_key(job_id), q.dead_letter_stream, c.job_logs_key(job_id),
                                       c.FINISHED_INDEX, c.JOBS_INDEX],
                                 args=[q.consumer_group, entry.id, "", f"{time.time():.6f}", job_id, *flat])
        log.info("draining: gave back job %s", job_id)

    def handle(self, snap: Snapshot, entry: Entry) -> str | None:
        """Run one entry to its end; returns the final state this agent stored, if any."""
        q, agents = snap.settings.queue, snap.settings.agents
        job_id = entry.fields.get(c.FIELD_JOB_ID, "")
        if not job_id:
            self._dead_letter(snap, entry, "malformed entry: no job_id field")
            return None
        if entry.deliveries > q.max_deliveries:
            self._dead_letter(snap, entry, f"delivered {entry.deliveries} times without a result "
                              f"(queue.maxDeliveries={q.max_deliveries}); "
                              "its agents died or were killed while running it")
            return None
        now = time.time()
        with redis_errors(self.client, f"starting job {job_id}"):
            (status, detail), acked = self.scripts.start_durable(snap.settings, job_id, entry.id, self.agent_id,
                                                                 now, snap.hash)
        if status != "ok":
            log.info("job %s: entry %s not run (%s %s)", job_id, entry.id, status, detail)
            return None
        wanted = acks(snap.settings)[0]
        if acked is not None and acked < wanted:
            # On the primary only. Holding the job back until a replica returns would stop the
            # whole pool while replicas are down; a failover right now runs it again elsewhere.
            log.warning("job %s: started, but %d of %d replica(s) confirmed it in time; running it", job_id,
                        acked, wanted)
        attempt = str(detail)
        try:
            submitted = float(entry.fields.get(c.FIELD_SUBMITTED_AT, "") or now)
            self.metrics.pickup.observe(max(0.0, now - submitted))
        except ValueError:
            pass
        spec = JobSpec(job_id=job_id, repo=entry.fields.get(c.FIELD_REPO, ""), ref=entry.fields.get(c.FIELD_REF, ""),
                       commit=entry.fields.get(c.FIELD_COMMIT, ""),
                       checkout=entry.fields.get(c.FIELD_CHECKOUT, c.CHECKOUT_GIT),
                       default_pipeline=agents.default_pipeline, job_timeout_seconds=agents.job_timeout_seconds,
                       gitea_url=snap.settings.gitea.url)
        cancel = CancelSignal()
        self.heartbeat.watch_job(q.stream, q.consumer_group, entry.id, job_id, cancel)
        self.heartbeat.set_state(c.AGENT_STATE_DRAINING if self.draining.is_set() else c.AGENT_STATE_RUNNING, job_id)
        sink = LogSink(self.client, job_id, agents.log_max_len)
        log.info("job %s started (attempt %s, %s %s)", job_id, attempt, spec.repo, spec.ref)
        def checked_out(commit: str) -> None:
            # Best effort: the result records the commit again, atomically with the state.
            try:
                with redis_errors(self.client, f"recording the commit of job {job_id}"):
                    self.scripts.checked_out(keys=[c.job_key(job_id)], args=[attempt, commit, f"{time.time():.6f}"])
            except RedisUnavailable as exc:
                log.warning("job %s: could not record its commit yet (%s)", job_id, exc.message)

        try:
            outcome = self.runner.run(spec, sink, cancel, on_checkout=checked_out)
        except Exception as exc:  # an agent bug must not leave the job running forever
            log.exception("job %s: runner failed", job_id)
            outcome = Outcome(c.STATE_FAILED, -1, f"agent error: {type(exc).__name__}: {exc}")
        finally:
            self.heartbeat.unwatch_job()
            sink.close()
        if outcome.state == LOST:
            log.warning("job %s was taken over by another agent; not recording a result", job_id)
            return None
        stored = self._finish(snap, entry, job_id, attempt, outcome)
        self.metrics.duration.observe(time.time() - now)
        return stored

    def _finish(self, snap: Snapshot, entry: Entry, job_id: str, attempt: str, outcome: Outcome) -> str | None:
        """Store the result and ack, until it is stored where it survives: with queue.mode
        sentinel that is on queue.sentinel.ackReplicas replicas (WAIT). Storing again is safe
        (FINISH answers ``repeat``), so after a failover that lost the first store, the result
        is stored on the new primary; the entry is still pending there under this agent."""
        deadline = time.monotonic() + FINISH_RETRY_SECONDS
        ack_deadline: float | None = None
        wanted = acks(snap.settings)[0]
        finished_at = time.time()
        delay = RETRY_MIN
        while True:
            try:
                with redis_errors(self.client, f"storing the result of job {job_id}"):
                    res, acked = self.scripts.finish_durable(snap.settings, job_id, entry.id, attempt, outcome.state,
                                                             outcome.exit_code, outcome.reason, finished_at,
                                                             commit=outcome.commit)
                if res not in ("ok", "repeat") or acked is None or acked >= wanted:
                    break
                ack_deadline = ack_deadline or time.monotonic() + FINISH_ACK_SECONDS
                if time.monotonic() > ack_deadline:
                    log.error("job %s: result stored on the primary, but no replica confirmed it within %.0fs; "
                              "if that primary fails before a replica catches up, the job runs again", job_id,
                              FINISH_ACK_SECONDS)
                    break
                log.warning("job %s: result stored on the primary; %d of %d replica(s) confirmed it; waiting",
                            job_id, acked, wanted)
            except RedisUnavailable as exc:
                if time.monotonic() > deadline:
                    log.error("job %s: giving up storing its result (%s); it will be run again", job_id, exc)
                    return None
                log.warning("job %s: cannot store the result yet (%s); retrying", job_id, exc.message)
            time.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)
        if res in ("ok", "repeat"):
            self.metrics.jobs.labels(outcome.state).inc()
            self.jobs_done += 1
            log.info("job %s finished: %s (exit %s)%s", job_id, outcome.state, outcome.exit_code,
                     f": {outcome.reason}" if outcome.reason else "")
            return outcome.state
        log.warning("job %s: result not stored (%s)", job_id, res)
        return None

    # -- the loop -------------------------------------------------------------------------

    def run(self, idle_timeout: Callable[[], float] | None = None) -> int:
        """Work until drained (or, with ``once``, after one job or the idle timeout). Exit code."""
        self.heartbeat.start()
        idle_since = time.monotonic()
        delay = RETRY_MIN
        try:
            while not self.draining.is_set():
                snap = self.holder.current()
                limit = idle_timeout() if idle_timeout else snap.settings.agents.idle_timeout_seconds
                try:
                    entry = self.next_entry(snap)
                    self.reading.set()
                    delay = RETRY_MIN
                except RedisUnavailable as exc:
                    log.warning("%s; retrying in %.1fs", exc.message, delay)
                    self.draining.wait(delay)
                    delay = min(RETRY_MAX, delay * 2)
                    if self.once and time.monotonic() - idle_since > limit:
                        log.error("Redis unreachable for longer than the idle timeout; giving up")
                        return 3
                    continue
                if entry is None:
                    if self.once and time.monotonic() - idle_since > limit:
                        log.info("no job within %.0fs; exiting", limit)
                        return 0
                    continue
                if self.draining.is_set():
                    if not entry.claimed:
                        self.requeue(snap, entry)
                    break
                try:
                    self.handle(snap, entry)
                except RedisUnavailable as exc:
                    # The entry stays pending under our name; its idle time grows and it is
                    # taken over (by us or another agent) once Redis answers again.
                    log.warning("job in entry %s interrupted: %s", entry.id, exc.message)
                    self.draining.wait(delay)
                    continue
                self.heartbeat.set_state(c.AGENT_STATE_DRAINING if self.draining.is_set() else c.AGENT_STATE_IDLE)
                idle_since = time.monotonic()
                if self.once:
                    return 0
            return 0
        finally:
            self.heartbeat.stop()
            self._retire()

    def _retire(self) -> None:
        """Leave the consumer group tidy: one-shot agents would otherwise pile up as consumers."""
        snap = self.holder.peek()
        if snap is None:
            return
        q = snap.settings.queue
        try:
            self.scripts.retire(keys=[q.stream], args=[q.consumer_group, self.agent_id])
        except Exception as exc:  # noqa: BLE001 - best effort: a leftover consumer with nothing pending is harmless
            log.debug("could not remove consumer %s: %s", self.agent_id, exc)

    def drain(self) -> None:
        """Finish the running job (within its timeout), take no new one, then return from run()."""
        if not self.draining.is_set():
            log.info("draining: finishing the running job, taking no new one")
            self.draining.set()
            self.heartbeat.set_state(c.AGENT_STATE_DRAINING, self.heartbeat.job_id)


def _flatten(fields: dict[str, str]) -> list[str]:
    """Stream fields as the [k1, v1, k2, v2, ...] argument list the Lua scripts re-XADD."""
    return [item for pair in fields.items() for item in pair]
