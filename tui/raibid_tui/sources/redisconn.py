"""The TUI's Redis connection, on :mod:`raibid_gitops.clients.redis` (password from
RAIBID_REDIS_PASSWORD / its file, errors translated to :class:`RedisUnavailable`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from raibid_gitops.errors import RedisUnavailable


class RedisConn:
    """A lazily created client for ``url``; ``password`` overrides the environment's."""

    def __init__(self, url: str, password: str | None = None) -> None:
        self.url = url
        self.password = password
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            from raibid_gitops.clients.redis import connect, read_password

            self._client = connect(self.url, password=self.password or read_password())
        return self._client

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing on exit must never fail the exit
                pass


@contextmanager
def redis_errors(conn: RedisConn, what: str) -> Iterator[None]:
    """Every failure as :class:`RedisUnavailable` naming the address (never the password)."""
    from raibid_gitops.clients.redis import describe
    from raibid_gitops.clients.redis import redis_errors as translate

    try:
        with translate(conn.client(), what):
            yield
    except RedisUnavailable:
        raise
    except Exception as exc:  # the boundary: anything else is translated too
        raise RedisUnavailable(f"Redis at {describe(conn.url)} failed while {what}: "
                               f"{type(exc).__name__}: {exc}") from exc
