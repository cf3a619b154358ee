"""Redis from settings plus a password, with redis-py's exceptions translated at the boundary.

Every caller (producer, agent, TUI, benchmarks) connects through :func:`connect` and wraps
its commands in :func:`redis_errors`, so a ``redis.ConnectionError`` never reaches a user raw:
it becomes :class:`RedisUnavailable` naming the address and what to check.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from raibid_gitops.errors import RedisUnavailable

if TYPE_CHECKING:  # pragma: no cover
    import redis as _redis

    from raibid_gitops.settings import Settings

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


def url_for(settings: Settings) -> str:
    return f"redis://{settings.queue.redis_address}/0"


def describe(url: str) -> str:
    """host:port of a URL, for messages (a URL may carry a password; this never does)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


def connect(url: str | None = None, *, settings: Settings | None = None, password: str | None = None) -> _redis.Redis:
    """A client for ``url`` (or the settings' ``queue.redisAddress``); connects lazily."""
    import redis

    if url is None:
        if settings is None:
            raise ValueError("connect() needs a url or settings")
        url = url_for(settings)
    client = redis.Redis.from_url(
        url,
        password=password,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        health_check_interval=30,
    )
    # Remember where it points, for error messages without the password.
    client.raibid_address = describe(url)  # type: ignore[attr-defined]
    return client


@contextmanager
def redis_errors(client: _redis.Redis | None = None, what: str = "") -> Iterator[None]:
    """Translate redis-py failures into :class:`RedisUnavailable` naming the address."""
    import redis

    where = getattr(client, "raibid_address", "Redis") if client is not None else "Redis"
    doing = f" while {what}" if what else ""
    try:
        yield
    except redis.AuthenticationError as exc:
        raise RedisUnavailable(
            f"Redis at {where} refused the password{doing}",
            hint="check the raibid-redis Secret / RAIBID_REDIS_PASSWORD",
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
