"""Jobs: submit, look up, list, cancel, read logs. The producer side of the queue.

A job is a stream entry (a reference: job id, repo, ref, commit) plus its status record
``raibid:job:{id}`` (the truth), written together by one script (see ``scripts.py``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from raibid_gitops import contract as c
from raibid_gitops import names
from raibid_gitops.clients.redis import Entries, StreamReads, redis_errors
from raibid_gitops.errors import JobNotFound, QueueError, shown
from raibid_gitops.queue.scripts import scripts_for

if TYPE_CHECKING:  # pragma: no cover
    import redis

    from raibid_gitops.settings import Settings

#: Job ids: what new_job_id makes, and what a caller may pass, kept to key-safe characters
#: and a length that does not bloat every key and log line.
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def check_job_id(job_id: str) -> str:
    """A job id as the commands take it; QueueError (without echoing it whole) if malformed."""
    if not _JOB_ID.fullmatch(job_id):
        raise QueueError(f"{shown(job_id)} is not a job id", hint="`raibid queue list` shows the job ids")
    return job_id


@dataclass(frozen=True)
class Job:
    """A job's status record, as stored."""

    id: str
    state: str
    repo: str = ""
    ref: str = ""
    commit: str = ""
    checkout: str = c.CHECKOUT_GIT
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str = ""
    agent: str = ""
    attempt: int = 0
    entry_id: str = ""
    settings_hash: str = ""
    cancel_requested: bool = False

    @property
    def final(self) -> bool:
        return self.state in c.FINAL_STATES

    @classmethod
    def from_record(cls, job_id: str, rec: dict[str, str]) -> Job:
        def num(key: str) -> float | None:
            v = rec.get(key)
            return float(v) if v not in (None, "") else None

        code = rec.get(c.REC_EXIT_CODE)
        return cls(
            id=job_id, state=rec.get(c.REC_STATE, ""), repo=rec.get(c.REC_REPO, ""), ref=rec.get(c.REC_REF, ""),
            commit=rec.get(c.REC_COMMIT, ""), checkout=rec.get(c.REC_CHECKOUT, c.CHECKOUT_GIT),
            submitted_at=num(c.REC_SUBMITTED_AT), started_at=num(c.REC_STARTED_AT),
            finished_at=num(c.REC_FINISHED_AT),
            exit_code=int(code) if code not in (None, "") else None,
            reason=rec.get(c.REC_REASON, ""), agent=rec.get(c.REC_AGENT, ""),
            attempt=int(rec.get(c.REC_ATTEMPT, "0") or 0), entry_id=rec.get(c.REC_ENTRY_ID, ""),
            settings_hash=rec.get(c.REC_SETTINGS_HASH, ""),
            cancel_requested=rec.get(c.REC_CANCEL_REQUESTED) == "1",
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as data output shows it: times in ISO 8601 (UTC), like every time raibid prints."""
        from raibid_gitops.times import iso

        out = dict(self.__dict__)
        for key in ("submitted_at", "started_at", "finished_at"):
            out[key] = iso(out[key])
        return out


@dataclass(frozen=True)
class JobSpec:
    """What a job runs: validated before anything is written."""

    repo: str
    ref: str
    commit: str = ""
    checkout: str = c.CHECKOUT_GIT

    def __post_init__(self) -> None:
        # Each check is the one the agent repeats before it clones (see raibid_gitops.names).
        if self.checkout not in (c.CHECKOUT_GIT, c.CHECKOUT_NONE):
            raise QueueError(f"checkout must be {c.CHECKOUT_GIT!r} or {c.CHECKOUT_NONE!r}, not {shown(self.checkout)}")
        problem = names.repo_problem(self.repo)
        if problem:
            raise QueueError(problem, hint="e.g. --repo raibid/hello")
        problem = names.ref_problem(self.ref)
        if problem:
            raise QueueError(problem, hint="e.g. --ref main or --ref refs/heads/main")
        if self.commit:
            # git reads commit ids in either case; we store them as git prints them.
            object.__setattr__(self, "commit", self.commit.lower())
            problem = names.commit_problem(self.commit)
            if problem:
                raise QueueError(problem, hint="e.g. --commit 3f2a9c1 (git rev-parse HEAD prints one)")

    def entry_fields(self, job_id: str, now: float) -> dict[str, str]:
        return {c.FIELD_JOB_ID: job_id, c.FIELD_REPO: self.repo, c.FIELD_REF: self.ref,
                c.FIELD_COMMIT: self.commit, c.FIELD_CHECKOUT: self.checkout, c.FIELD_SUBMITTED_AT: f"{now:.6f}"}


@dataclass(frozen=True)
class Submitted:
    job_id: str
    entry_id: str
    #: queue.mode sentinel: replicas that confirmed the job (WAIT) against those asked for;
    #: (None, 0) in single mode. Fewer than asked: on the primary only (see :attr:`durable`).
    replicas: int | None = None
    replicas_wanted: int = 0

    @property
    def durable(self) -> bool:
        """Survives losing the primary: as many replicas as queue.sentinel.ackReplicas have it."""
        return self.replicas is None or self.replicas >= self.replicas_wanted


def new_job_id() -> str:
    # Time-ordered prefix (ms, hex) so ids sort roughly by submission; random tail for uniqueness
    # across producers without coordination (32 random bits, as uuid4().hex[:8] had).
    return f"{int(time.time() * 1000):x}-{os.urandom(4).hex()}"


def ensure_group(client: redis.Redis, settings: Settings) -> bool:
    """Create the consumer group (and the stream) if missing; True if it was created.

    From id 0, so entries added before the group existed are delivered too. KEDA's trigger
    needs the group before any agent exists, which is why the producer creates it.
    """
    import redis as _r

    q = settings.queue
    with redis_errors(client, f"creating consumer group {q.consumer_group} on {q.stream}"):
        try:
            client.xgroup_create(q.stream, q.consumer_group, id="0", mkstream=True)
            return True
        except _r.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise


def submit(client: redis.Redis, settings: Settings, spec: JobSpec, *, job_id: str | None = None) -> Submitted:
    """Queue one job: the stream entry (:meth:`JobSpec.entry_fields`), its status record and the
    index entry, atomically, in one round trip (in queue.mode sentinel followed by WAIT)."""
    import redis as _r

    from raibid_gitops.clients.redis import acks, through_failover
    from raibid_gitops.errors import RedisUnavailable

    job_id = check_job_id(job_id) if job_id else new_job_id()
    now = f"{time.time():.6f}"
    q = settings.queue
    keep = q.retention
    scripts = scripts_for(client)

    def attempt() -> tuple[Any, int | None]:
        with redis_errors(client, f"submitting job {job_id} to {q.stream}"):
            try:
                entry_id, acked = scripts.durable(
                    settings, scripts.submit,
                    [q.stream, c.job_key(job_id), c.JOBS_INDEX, c.job_logs_key(job_id), c.FINISHED_INDEX],
                    [q.consumer_group, q.max_len, job_id, now, keep.finished_job_seconds, keep.finished_jobs,
                     spec.repo, spec.ref, spec.commit, spec.checkout],
                )
            except _r.ResponseError as exc:
                if "JOBEXISTS" not in str(exc):
                    raise
                # A submit sent again after the connection broke before the answer came (Redis
                # restarting, a failover) may find its first send landed. Ours, if the record
                # is the one we wrote (same submit time); else a real clash.
                rec = client.hgetall(c.job_key(job_id))
                if rec.get(c.REC_SUBMITTED_AT) != now or rec.get(c.REC_REPO) != spec.repo:
                    raise QueueError(f"job {job_id} already exists") from None
                entry_id, acked = rec.get(c.REC_ENTRY_ID, ""), None
                wanted, timeout_ms = acks(settings)
                if wanted:
                    acked = int(client.wait(wanted, timeout_ms))
        return entry_id, acked

    try:
        # Through Sentinel a failover delays the submit; the same job id makes a repeat safe.
        entry_id, acked = through_failover(client, attempt)
    except RedisUnavailable as exc:
        # Whether the job landed is unknown (the answer was lost): say which job to look for.
        raise RedisUnavailable(f"{exc.message}; job {job_id} may or may not have been queued: "
                               f"`raibid queue status {job_id}` tells", hint=exc.hint) from exc
    wanted = acks(settings)[0]
    return Submitted(job_id=job_id, entry_id=str(entry_id), replicas=acked, replicas_wanted=wanted)


def get_job(client: redis.Redis, job_id: str) -> Job:
    check_job_id(job_id)
    with redis_errors(client, f"reading job {job_id}"):
        rec = cast("dict[str, str]", client.hgetall(c.job_key(job_id)))
    if not rec:
        raise JobNotFound(f"job {job_id} not found", hint="`raibid queue list` shows the known jobs")
    return Job.from_record(job_id, rec)


def list_jobs(client: redis.Redis, *, limit: int = 50, state: str | None = None) -> list[Job]:
    """Newest first; ``state`` filters (the filter is applied to the newest ``limit * 4`` ids)."""
    with redis_errors(client, "listing jobs"):
        scan = limit * 4 if state else limit
        ids = cast("list[str]", client.zrevrange(c.JOBS_INDEX, 0, scan - 1))
        pipe = client.pipeline(transaction=False)
        for jid in ids:
            pipe.hgetall(c.job_key(jid))
        recs = pipe.execute()
    jobs = [Job.from_record(jid, rec) for jid, rec in zip(ids, recs, strict=True) if rec]
    if state:
        jobs = [j for j in jobs if j.state == state]
    return jobs[:limit]


@dataclass(frozen=True)
class CancelResult:
    job_id: str
    outcome: str  # cancelled | requested | final
    state: str = ""

    def message(self) -> str:
        if self.outcome == "cancelled":
            return f"job {self.job_id} cancelled (it had not started)"
        if self.outcome == "requested":
            return f"job {self.job_id} is running; cancel requested, the agent stops it within a few seconds"
        return f"job {self.job_id} already finished ({self.state}); nothing to cancel"


def cancel(client: redis.Redis, settings: Settings, job_id: str) -> CancelResult:
    check_job_id(job_id)
    with redis_errors(client, f"cancelling job {job_id}"):
        keep = settings.queue.retention
        status, detail = scripts_for(client).cancel(
            keys=[c.job_key(job_id), c.job_logs_key(job_id), c.JOBS_INDEX, c.FINISHED_INDEX],
            args=[f"{time.time():.6f}", settings.agents.log_max_len, job_id, keep.finished_job_seconds,
                  keep.finished_jobs],
        )
    if status == "missing":
        raise JobNotFound(f"job {job_id} not found", hint="`raibid queue list` shows the known jobs")
    return CancelResult(job_id, "final" if status == "final" else status, detail)


@dataclass(frozen=True)
class LogLine:
    id: str
    time: float
    source: str
    line: str

    def format(self) -> str:
        return self.line if self.source == c.LOG_SOURCE_OUTPUT else f"[raibid] {self.line}"

    def to_dict(self) -> dict[str, Any]:
        from raibid_gitops.times import iso

        return {"id": self.id, "time": iso(self.time), "source": self.source, "line": self.line}


def _log_lines(entries: list[tuple[str, dict[str, str]]]) -> list[LogLine]:
    return [LogLine(eid, float(f.get(c.LOG_TIME, "0") or 0), f.get(c.LOG_SOURCE, c.LOG_SOURCE_OUTPUT),
                    f.get(c.LOG_LINE, "")) for eid, f in entries]


def read_logs(client: redis.Redis, job_id: str) -> list[LogLine]:
    get_job(client, job_id)  # a clear "not found" rather than an empty log
    with redis_errors(client, f"reading logs of job {job_id}"):
        return _log_lines(cast(Entries, client.xrange(c.job_logs_key(job_id))))


def follow_logs(client: redis.Redis, job_id: str, *, poll_ms: int = 1000) -> Iterator[LogLine]:
    """Every line so far, then new ones as they come, until the job is final."""
    get_job(client, job_id)
    key = c.job_logs_key(job_id)
    last = "0-0"
    while True:
        with redis_errors(client, f"following logs of job {job_id}"):
            got = cast(StreamReads, client.xread({key: last}, count=500, block=poll_ms))
            state = client.hget(c.job_key(job_id), c.REC_STATE)
        for _stream, entries in got or []:
            for line in _log_lines(entries):
                last = line.id
                yield line
        if not got and state in c.FINAL_STATES:
            return
