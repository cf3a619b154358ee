"""The dead-letter stream: entries delivered ``maxDeliveries`` times without a result.

A human work list: `dead list` shows them with the reason, `dead retry JOB` puts the job
back in the queue as a new entry, `dead drop JOB` removes it from the list (the job's status
record keeps state ``dead`` and the reason).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from raibid_gitops import contract as c
from raibid_gitops.clients.redis import Entries, redis_errors
from raibid_gitops.errors import JobNotFound
from raibid_gitops.queue.scripts import scripts_for

if TYPE_CHECKING:  # pragma: no cover
    import redis

    from raibid_gitops.settings import Settings

#: Fields of a dead-letter entry that describe the dead letter, not the job.
_META = (c.FIELD_REASON, c.FIELD_ORIGINAL_ID, c.FIELD_DELIVERIES)


@dataclass(frozen=True)
class DeadLetter:
    id: str
    job_id: str
    reason: str
    deliveries: int
    original_id: str
    fields: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """As data output shows it: the submit time in ISO 8601 (UTC), like every time raibid prints."""
        from raibid_gitops.times import iso

        out = dict(self.__dict__)
        fields = dict(self.fields)
        raw = fields.get(c.FIELD_SUBMITTED_AT)
        if raw:
            try:
                fields[c.FIELD_SUBMITTED_AT] = iso(float(raw))
            except ValueError:
                pass  # anyone with Redis's password can write an entry: show what is there
        out["fields"] = fields
        return out


def _parse(eid: str, f: dict[str, str]) -> DeadLetter:
    return DeadLetter(id=eid, job_id=f.get(c.FIELD_JOB_ID, ""), reason=f.get(c.FIELD_REASON, ""),
                      deliveries=int(f.get(c.FIELD_DELIVERIES, "0") or 0), original_id=f.get(c.FIELD_ORIGINAL_ID, ""),
                      fields={k: v for k, v in f.items() if k not in _META})


def list_dead(client: redis.Redis, settings: Settings, *, limit: int = 100) -> list[DeadLetter]:
    with redis_errors(client, f"reading {settings.queue.dead_letter_stream}"):
        entries = cast(Entries, client.xrevrange(settings.queue.dead_letter_stream, count=limit))
        return [_parse(eid, f) for eid, f in entries]


def _find(client: redis.Redis, settings: Settings, job_id: str) -> DeadLetter:
    from raibid_gitops.queue.jobs import check_job_id

    check_job_id(job_id)
    with redis_errors(client, f"reading {settings.queue.dead_letter_stream}"):
        for eid, f in cast(Entries, client.xrange(settings.queue.dead_letter_stream)):
            if f.get(c.FIELD_JOB_ID) == job_id:
                return _parse(eid, f)
    raise JobNotFound(f"job {job_id} is not in the dead-letter stream {settings.queue.dead_letter_stream}",
                      hint="`raibid queue dead list` shows the dead letters")


def retry(client: redis.Redis, settings: Settings, job_id: str) -> str:
    """Queue the job again as a new entry (its delivery count starts over); returns the entry id."""
    dead = _find(client, settings, job_id)
    q = settings.queue
    flat: list[str] = []
    for k, v in dead.fields.items():
        flat += [k, v]
    with redis_errors(client, f"retrying job {job_id}"):
        return str(scripts_for(client).requeue(
            keys=[q.stream, c.job_key(job_id), q.dead_letter_stream, c.job_logs_key(job_id), c.FINISHED_INDEX,
                  c.JOBS_INDEX],
            args=[q.consumer_group, "", dead.id, f"{time.time():.6f}", job_id, *flat],
        ))


def drop(client: redis.Redis, settings: Settings, job_id: str) -> None:
    dead = _find(client, settings, job_id)
    with redis_errors(client, f"dropping dead letter of job {job_id}"):
        client.xdel(settings.queue.dead_letter_stream, dead.id)
