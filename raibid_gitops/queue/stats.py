"""Queue statistics: what `raibid queue stats`, the TUI and benchmarks show.

Besides the stream's numbers, where the queue lives: the primary, its replicas and, with
``queue.mode: sentinel``, the Sentinels and the failovers raibid's clients have seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from raibid_gitops import contract as c
from raibid_gitops.clients.redis import Entries, primary_address, redis_errors

if TYPE_CHECKING:  # pragma: no cover
    import redis

    from raibid_gitops.settings import Settings

#: Redis answers with anything its clients wrote; a field shown is cut to this length.
MAX_FIELD = 120

# KEYS: primary key, failovers stream   ARGV: address seen, now, kept
# The first client to reach a new primary records the change once: the key is replicated
# data, so on the promoted replica it still names the old primary.
NOTE_PRIMARY = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
if not cur then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'from', cur, 'to', ARGV[1], 'at', ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Replica:
    address: str
    state: str  # online, wait_bgsave, send_bulk, ... as the primary reports it
    offset: int
    lag_seconds: int | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Failover:
    at: float
    old: str
    new: str

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "from": self.old, "to": self.new}


@dataclass(frozen=True)
class RedisTopology:
    """Where the queue lives now."""

    mode: str  # single | sentinel
    primary: str  # host:port of the server answering writes
    replicas: tuple[Replica, ...] = ()
    #: Sentinels watching the primary (as one of them counts them) and their quorum.
    sentinels: int | None = None
    quorum: int | None = None
    #: Failovers raibid's clients have seen (recorded in Redis), newest last.
    failovers: tuple[Failover, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "primary": self.primary, "replicas": [r.to_dict() for r in self.replicas],
                "sentinels": self.sentinels, "quorum": self.quorum, "failovers": len(self.failovers),
                "lastFailover": self.failovers[-1].to_dict() if self.failovers else None}


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
    redis: RedisTopology | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["redis"] = self.redis.to_dict() if self.redis else None
        return out


def _id_time(entry_id: str) -> float:
    return int(entry_id.split("-", 1)[0]) / 1000.0


def note_primary(client: redis.Redis) -> bool:
    """For a client through Sentinel: record a failover if the primary is not the one last
    seen. True when this call recorded one. A no-op for a client of one server."""
    address = primary_address(client)
    if address is None:
        return False
    return bool(client.eval(NOTE_PRIMARY, 2, c.PRIMARY_KEY, c.FAILOVERS_STREAM, address, f"{time.time():.3f}",
                            c.FAILOVERS_KEPT))


def _clip(value: Any) -> str:
    return str(value)[:MAX_FIELD]


def topology(client: redis.Redis, settings: Settings) -> RedisTopology:
    """The primary (and in sentinel mode what the Sentinels know), its replicas as the
    primary reports them, and the failovers recorded."""
    with redis_errors(client, "reading where the queue lives"):
        primary = primary_address(client)
        sentinels = quorum = None
        if primary is not None:
            note_primary(client)
            manager, master = client.raibid_sentinel  # type: ignore[attr-defined]
            for sentinel in manager.sentinels:
                try:
                    info = sentinel.sentinel_master(master)
                except Exception:  # noqa: BLE001 - another Sentinel may answer; none is checked below
                    continue
                sentinels = int(info.get("num-other-sentinels", 0)) + 1
                quorum = int(info.get("quorum", 0)) or None
                break
        info = client.info("replication")
        failovers = tuple(
            Failover(float(f.get("at", 0) or 0), _clip(f.get("from", "")), _clip(f.get("to", "")))
            for _id, f in cast(Entries, client.xrange(c.FAILOVERS_STREAM, count=c.FAILOVERS_KEPT * 2)))
    replicas = []
    for key, value in sorted(info.items()):
        if key.startswith("slave") and key[5:].isdigit() and isinstance(value, dict):
            lag = value.get("lag")
            replicas.append(Replica(f"{_clip(value.get('ip', '?'))}:{value.get('port', '?')}",
                                    _clip(value.get("state", "?")), int(value.get("offset", 0) or 0),
                                    int(lag) if lag is not None else None))
    if primary is None:
        primary = getattr(client, "raibid_address", "?")
    return RedisTopology(mode=settings.queue.mode, primary=primary, replicas=tuple(replicas), sentinels=sentinels,
                         quorum=quorum, failovers=failovers)


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
        dead_letters=dead, agents=agents, redis=topology(client, settings),
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
