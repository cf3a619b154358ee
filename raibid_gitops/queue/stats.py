"""Queue statistics: what `raibid queue stats`, the TUI and benchmarks show."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raibid_gitops import contract as c
from raibid_gitops.clients.redis import redis_errors

if TYPE_CHECKING:  # pragma: no cover
    import redis

    from raibid_gitops.settings import Settings


@dataclass(frozen=True)
class QueueStats:
    stream: str
    group: str
    length: int
    group_exists: bool
    lag: int | None
    pending: int
    consumers: int
    oldest_pending_age_seconds: float | None
    dead_letters: int
    agents: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _id_time(entry_id: str) -> float:
    return int(entry_id.split("-", 1)[0]) / 1000.0


def stats(client: redis.Redis, settings: Settings) -> QueueStats:
    import redis as _r

    q = settings.queue
    with redis_errors(client, f"reading stats of {q.stream}"):
        length = int(client.xlen(q.stream))
        dead = int(client.xlen(q.dead_letter_stream))
        agents = sum(1 for _ in client.scan_iter(match=c.AGENT_PATTERN, count=500))
        group: dict[str, Any] | None = None
        try:
            for g in client.xinfo_groups(q.stream):
                if g["name"] == q.consumer_group:
                    group = g
        except _r.ResponseError:  # no such stream yet
            group = None
        oldest = None
        pending = 0
        if group is not None:
            summary = client.xpending(q.stream, q.consumer_group)
            pending = int(summary["pending"])
            if pending and summary.get("min"):
                oldest = max(0.0, time.time() - _id_time(summary["min"]))
    lag = group.get("lag") if group else None
    return QueueStats(
        stream=q.stream, group=q.consumer_group, length=length, group_exists=group is not None,
        lag=int(lag) if lag is not None else None, pending=pending,
        consumers=int(group["consumers"]) if group else 0, oldest_pending_age_seconds=oldest,
        dead_letters=dead, agents=agents,
    )


def live_agents(client: Any) -> dict[str, dict[str, str]]:
    """Heartbeat hashes of live agents, by id (a dead agent's key expires by its TTL)."""
    from raibid_gitops import contract

    prefix = contract.agent_key("")
    out: dict[str, dict[str, str]] = {}
    for key in client.scan_iter(match=contract.AGENT_PATTERN, count=200):
        data = client.hgetall(key)
        if data:
            out[key[len(prefix):]] = data
    return out
