"""Redis from settings plus a password, with redis-py's exceptions translated at the boundary.

Every caller (producer, agent, TUI, benchmarks) connects through :func:`connect` and wraps
its commands in :func:`redis_errors`, so a ``redis.ConnectionError`` never reaches a user raw:
it becomes :class:`RedisUnavailable` naming the address and what to check.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from raibid_gitops.errors import RedisUnavailable, shown

if TYPE_CHECKING:  # pragma: no cover
    import redis as _redis

    from raibid_gitops.settings import Settings

T = TypeVar("T")

# Replies as our clients get them. Every client is made by connect() with decode_responses=True,
# so ids, keys and values are str; redis-py's own types also allow bytes (and RESP3 shapes), so
# callers cast a reply to one of these where they read it.
#: XRANGE, XREVRANGE: (entry id, fields), oldest (or newest) first.
Entries = list[tuple[str, dict[str, str]]]
#: XREAD, XREADGROUP of new entries (``>``): (stream, entries) per stream, or None when BLOCK ran out.
StreamReads = list[tuple[str, Entries]] | None

#: Environment variable holding Redis's password (the agent's pod gets it from the Secret).
PASSWORD_ENV = "RAIBID_REDIS_PASSWORD"
#: Environment variable naming a file with the password (a mounted Secret key).
PASSWORD_FILE_ENV = "RAIBID_REDIS_PASSWORD_FILE"
#: Socket timeouts: long enough for a busy 2-core node, short enough that a dead Redis is
#: reported instead of hanging a command forever. Blocking reads add their BLOCK time.
CONNECT_TIMEOUT = 5.0
SOCKET_TIMEOUT = 30.0


def read_password(password_file: str | None = None) -> str | None:
    """The password from ``--password-file``, else $RAIBID_REDIS_PASSWORD_FILE, else $RAIBID_REDIS_PASSWORD."""
    path = password_file or os.environ.get(PASSWORD_FILE_ENV)
    if path:
        try:
            # Secrets mounted from a file often end with a newline that is not part of the value.
            return Path(path).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise RedisUnavailable(
                f"cannot read the Redis password file {path}: {exc.strerror}",
                hint="mount the raibid-redis Secret or set RAIBID_REDIS_PASSWORD",
            ) from exc
    return os.environ.get(PASSWORD_ENV) or None


#: The scheme of a URL that names Sentinels rather than Redis:
#: ``redis+sentinel://host:port[,host:port...]/<master name>[/<db>]`` (no password in it).
SENTINEL_SCHEME = "redis+sentinel"
_SENTINEL_URL = re.compile(
    r"redis\+sentinel://(?P<hosts>[A-Za-z0-9.\-]{1,253}:[0-9]{1,5}(?:,[A-Za-z0-9.\-]{1,253}:[0-9]{1,5}){0,4})"
    r"/(?P<master>[A-Za-z0-9_.\-]{1,64})(?:/(?P<db>[0-9]{1,2}))?")


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0

    def describe(self) -> str:
        return f"the primary {self.master!r} of Sentinel {','.join(f'{h}:{p}' for h, p in self.sentinels)}"


def url_for(settings: Settings) -> str:
    """How clients reach Redis: the server (single), or the Sentinels (queue.mode: sentinel)."""
    q = settings.queue
    if q.mode == "sentinel":
        return f"{SENTINEL_SCHEME}://{q.sentinel.addresses}/{q.sentinel.master_name}/0"
    return f"redis://{q.redis_address}/0"


def parse_sentinel_url(url: str) -> SentinelUrl | None:
    """The Sentinels of a ``redis+sentinel://`` URL; None for any other scheme. A malformed
    Sentinel URL is refused, quoting it only in part."""
    if not url.startswith(SENTINEL_SCHEME + ":"):
        return None
    if "@" in url:
        # Never echoed: the part before @ is a credential.
        raise RedisUnavailable("a Sentinel URL must not carry credentials",
                               hint="give the password in RAIBID_REDIS_PASSWORD or --redis-password-file")
    m = _SENTINEL_URL.fullmatch(url)
    if not m:
        raise RedisUnavailable(f"{shown(url)} is not a Sentinel URL",
                               hint=f"{SENTINEL_SCHEME}://HOST:PORT[,HOST:PORT...]/MASTER[/DB], no password in it")
    hosts = []
    for part in m.group("hosts").split(","):
        host, port = part.rsplit(":", 1)
        if not 1 <= int(port) <= 65535:
            raise RedisUnavailable(f"port {port} in the Sentinel URL is not between 1 and 65535")
        hosts.append((host, int(port)))
    return SentinelUrl(tuple(hosts), m.group("master"), int(m.group("db") or 0))


def describe(url: str) -> str:
    """Where a URL points, for messages (a URL may carry a password; this never does)."""
    from urllib.parse import urlsplit

    try:
        sentinel = parse_sentinel_url(url)
    except RedisUnavailable:
        return "a malformed Sentinel URL"
    if sentinel is not None:
        return sentinel.describe()
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


def connect(url: str | None = None, *, settings: Settings | None = None, password: str | None = None) -> _redis.Redis:
    """A client for ``url`` (or how the settings say to reach Redis); connects lazily.

    A ``redis+sentinel://`` URL gives a client of the current primary: every new connection
    asks the Sentinels where it is (redis-py's ``Sentinel.master_for``), so after a failover
    the next command reaches the promoted replica. The Sentinels take the same password."""
    import redis

    if url is None:
        if settings is None:
            raise ValueError("connect() needs a url or settings")
        url = url_for(settings)
    options = dict(password=password, decode_responses=True, socket_connect_timeout=CONNECT_TIMEOUT,
                   socket_timeout=SOCKET_TIMEOUT, health_check_interval=30)
    sentinel = parse_sentinel_url(url)
    if sentinel is not None:
        from redis.sentinel import Sentinel

        manager = Sentinel(list(sentinel.sentinels), sentinel_kwargs={
            "password": password, "socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": CONNECT_TIMEOUT,
            "decode_responses": True}, db=sentinel.db, **options)
        client = manager.master_for(sentinel.master, redis_class=redis.Redis)
        client.raibid_sentinel = (manager, sentinel.master)
    else:
        client = redis.Redis.from_url(url, **options)
    # Remember where it points, for error messages without the password.
    client.raibid_address = describe(url)
    return client


def primary_address(client: _redis.Redis) -> str | None:
    """host:port of the primary a Sentinel client reaches now (asks the Sentinels); None for a
    client of one server."""
    found = getattr(client, "raibid_sentinel", None)
    if found is None:
        return None
    manager, master = found
    host, port = manager.discover_master(master)
    return f"{host}:{port}"


#: How long a write through Sentinel is retried while the primary is unreachable: a failover
#: takes the Sentinels' down-after time (5 s as generated) plus an election and a promotion.
FAILOVER_SECONDS = 30.0


def through_failover(client: _redis.Redis, call: Callable[[], T]) -> T:
    """``call()``, retried with backoff while a Sentinel client's primary is unreachable (up to
    :data:`FAILOVER_SECONDS`), so a failover delays a write instead of failing it. ``call``
    must be safe to repeat. A client of one server calls once."""
    import time

    if getattr(client, "raibid_sentinel", None) is None:
        return call()
    deadline = time.monotonic() + FAILOVER_SECONDS
    delay = 0.2
    while True:
        try:
            return call()
        except RedisUnavailable:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(2.0, delay * 2)


def acks(settings: Settings) -> tuple[int, int]:
    """(replicas, timeout in ms) a write that must survive a failover waits for (Redis WAIT);
    (0, 0) in single mode, where AOF with fsync on every write is the guarantee."""
    q = settings.queue
    if q.mode != "sentinel" or q.sentinel.ack_replicas == 0:
        return 0, 0
    return q.sentinel.ack_replicas, q.sentinel.ack_timeout_seconds * 1000


@contextmanager
def redis_errors(client: _redis.Redis | None = None, what: str = "") -> Iterator[None]:
    """Translate redis-py failures into :class:`RedisUnavailable` naming the address."""
    import redis
    from redis.sentinel import MasterNotFoundError as MasterNotFound

    where = getattr(client, "raibid_address", "Redis") if client is not None else "Redis"
    doing = f" while {what}" if what else ""
    try:
        yield
    except redis.AuthenticationError as exc:
        raise RedisUnavailable(
            f"Redis at {where} refused the password{doing}",
            hint="check the raibid-redis Secret / RAIBID_REDIS_PASSWORD",
        ) from exc
    except MasterNotFound as exc:
        raise RedisUnavailable(
            f"no Sentinel names a primary for {where}{doing}: {exc}",
            hint="a failover may be under way (it takes seconds); else check the Sentinels and "
                 "queue.sentinel.addresses or --redis-url",
        ) from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise RedisUnavailable(
            f"cannot reach Redis at {where}{doing}: {exc}",
            hint="is raibid-redis running? check queue.redisAddress or --redis-url",
        ) from exc
    except redis.ResponseError as exc:
        msg = str(exc)
        hint = None
        if msg.startswith("NOAUTH"):
            hint = "Redis needs a password: set RAIBID_REDIS_PASSWORD or --redis-password-file"
        elif msg.startswith("NOGROUP"):
            hint = "submit a job (it creates the consumer group) or run `raibid queue stats`"
        raise RedisUnavailable(f"Redis at {where} refused a command{doing}: {msg}", hint=hint) from exc
    except redis.RedisError as exc:
        raise RedisUnavailable(f"Redis at {where} failed{doing}: {exc}") from exc
