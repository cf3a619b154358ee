"""Queue numbers for the TUI: stream length, group lag and pending entries, the oldest
pending entry's age, dead letters, a running throughput (entries acknowledged per sample),
and the newest jobs (:func:`raibid_gitops.queue.list_jobs`).

Names (stream, group, dead-letter stream) come from the settings, never from literals.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from raibid_gitops.errors import RaibidError, RedisUnavailable
from raibid_gitops.queue.jobs import Job
from raibid_tui.sources.redisconn import RedisConn, redis_errors

#: Samples kept for the sparkline (with a 2 s refresh: the last 2 minutes).
HISTORY = 60
#: Jobs listed, newest first: a screenful, and a bounded read every refresh (one ZREVRANGE and
#: one pipelined HGETALL per job); `raibid queue list --limit` reaches further back.
MAX_JOBS = 50
#: Longest message kept when the job records cannot be read.
MAX_ERROR = 300


@dataclass(frozen=True)
class QueueStats:
    stream: str
    group: str
    dead_letter_stream: str
    length: int = 0
    #: Entries not yet delivered to the group (what KEDA scales on); None if Redis cannot tell.
    lag: int | None = 0
    pending: int = 0
    #: Seconds since the oldest pending entry was queued (None: nothing pending).
    oldest_pending_age: float | None = None
    dead_letters: int = 0
    consumers: int = 0
    group_exists: bool = True
    #: Entries acknowledged per sample, oldest first (for the sparkline).
    throughput: tuple[float, ...] = ()
    #: Seconds between samples.
    interval: float = 2.0
    #: The newest jobs' status records, newest first (at most MAX_JOBS).
    jobs: tuple[Job, ...] = ()
    #: Why the job records could not be read ("" when they were); the numbers above still are.
    jobs_error: str = ""
    #: Where the queue lives: the primary, its replicas, the Sentinels and the failovers seen
    #: (:class:`raibid_gitops.queue.stats.RedisTopology`); None when not read.
    redis: Any = None


@dataclass
class QueueSource:
    """Numbers from :func:`raibid_gitops.queue.stats.stats`; throughput from the group's
    ``entries-read`` counter (Redis 7), sampled every ``interval`` seconds.

    ``settings`` is a Settings, or a function returning the current ones (the config repo's
    HEAD, so a fixed settings.yaml takes effect on the next refresh, without a restart)."""

    conn: RedisConn
    settings: Any
    interval: float = 2.0
    _history: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY), repr=False)
    _last_done: int | None = field(default=None, repr=False)
    _names: tuple[str, str] | None = field(default=None, repr=False)

    def current_settings(self) -> Any:
        return self.settings() if callable(self.settings) else self.settings

    def stats(self) -> QueueStats:
        """One sample. Throughput is the change of (entries read by the group - pending)
        since the previous sample, i.e. entries finished (acknowledged) in between."""
        from raibid_gitops.queue.stats import stats

        settings = self.current_settings()
        q = settings.queue
        if self._names != (q.stream, q.consumer_group):
            # Another stream or group: the counter is another one, start the history over.
            self._names, self._last_done = (q.stream, q.consumer_group), None
            self._history.clear()
        client = self.conn.client()
        with redis_errors(self.conn, f"reading the queue {q.stream}"):
            s = stats(client, settings)
            if s.group_exists:
                group: dict[str, Any] = next((g for g in client.xinfo_groups(q.stream)
                                              if g.get("name") == q.consumer_group), {})
                read = group.get("entries-read")
                if read is not None:
                    done = int(read) - int(group.get("pending") or 0)
                    if self._last_done is not None:
                        self._history.append(float(max(0, done - self._last_done)))
                    self._last_done = done
        jobs, jobs_error = self.jobs()
        return QueueStats(stream=s.stream, group=s.group, dead_letter_stream=q.dead_letter_stream,
                          length=s.length, lag=s.lag, pending=s.pending,
                          oldest_pending_age=s.oldest_pending_age_seconds, dead_letters=s.dead_letters,
                          consumers=s.consumers, group_exists=s.group_exists, throughput=tuple(self._history),
                          interval=self.interval, jobs=jobs, jobs_error=jobs_error, redis=s.redis)

    def jobs(self) -> tuple[tuple[Job, ...], str]:
        """The newest MAX_JOBS jobs, and "" — or (), and why they could not be read. Redis
        being down raises (the tab's banner); a record that does not parse only empties the
        list, with the reason."""
        from raibid_gitops.queue.jobs import list_jobs

        try:
            # list_jobs translates Redis's own failures; anything else is the records' fault.
            return tuple(list_jobs(self.conn.client(), limit=MAX_JOBS)), ""
        except RedisUnavailable:
            raise
        except RaibidError as exc:
            return (), exc.message[:MAX_ERROR]
        except Exception as exc:  # noqa: BLE001 - a malformed record: say so, keep the numbers
            return (), f"a job record could not be read: {type(exc).__name__}: {exc}"[:MAX_ERROR]
