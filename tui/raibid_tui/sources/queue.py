"""Queue numbers for the TUI: stream length, group lag and pending entries, the oldest
pending entry's age, dead letters, and a running throughput (entries acknowledged per sample).

Names (stream, group, dead-letter stream) come from the settings, never from literals.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from raibid_tui.sources.redisconn import RedisConn, redis_errors

#: Samples kept for the sparkline (with a 2 s refresh: the last 2 minutes).
HISTORY = 60


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


@dataclass
class QueueSource:
    """Numbers from :func:`raibid_gitops.queue.stats.stats`; throughput from the group's
    ``entries-read`` counter (Redis 7), sampled every ``interval`` seconds."""

    conn: RedisConn
    settings: Any
    interval: float = 2.0
    _history: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY), repr=False)
    _last_done: int | None = field(default=None, repr=False)

    def stats(self) -> QueueStats:
        """One sample. Throughput is the change of (entries read by the group - pending)
        since the previous sample, i.e. entries finished (acknowledged) in between."""
        from raibid_gitops.queue.stats import stats

        q = self.settings.queue
        client = self.conn.client()
        with redis_errors(self.conn, f"reading the queue {q.stream}"):
            s = stats(client, self.settings)
            if s.group_exists:
                group: dict[str, Any] = next((g for g in client.xinfo_groups(q.stream) if g.get("name") == q.consumer_group), {})
                read = group.get("entries-read")
                if read is not None:
                    done = int(read) - int(group.get("pending") or 0)
                    if self._last_done is not None:
                        self._history.append(float(max(0, done - self._last_done)))
                    self._last_done = done
        return QueueStats(stream=s.stream, group=s.group, dead_letter_stream=q.dead_letter_stream,
                          length=s.length, lag=s.lag, pending=s.pending,
                          oldest_pending_age=s.oldest_pending_age_seconds, dead_letters=s.dead_letters,
                          consumers=s.consumers, group_exists=s.group_exists, throughput=tuple(self._history),
                          interval=self.interval)
