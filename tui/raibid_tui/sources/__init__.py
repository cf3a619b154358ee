"""The TUI's data layer: one module per backend, each returning frozen row dataclasses.

Widgets never see a client object; the app calls these from thread workers and hands the
rows to widgets on the main thread. Tests replace a :class:`Sources` member with a fake that
returns fixed rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import threading

    from raibid_gitops.errors import KubeError
    from raibid_gitops.gitops.keda import Pool
    from raibid_tui.sources.agents import AgentRow
    from raibid_tui.sources.changes import ChangesSnapshot, PullRow
    from raibid_tui.sources.flux import EventRow, FluxRow, FluxUpdate
    from raibid_tui.sources.queue import QueueStats


# What each panel needs of its backend: the real sources below, or the fixed ones snapshot tests
# pass. Each method blocks (widgets call it from a thread worker) and raises a RaibidError.


class FluxReader(Protocol):
    def watch(self, kind: str, emit: Callable[[FluxUpdate], None], on_error: Callable[[KubeError | None], None],
              stop: threading.Event) -> None: ...
    def events(self, row: FluxRow, limit: int = 12) -> tuple[EventRow, ...]: ...
    def set_suspended(self, row: FluxRow, suspend: bool) -> None: ...
    def reconcile(self, row: FluxRow, progress: Callable[[str], None], timeout: float = 300.0) -> str: ...
    def stop(self) -> None: ...


class ChangesReader(Protocol):
    def snapshot(self) -> ChangesSnapshot: ...
    def diff(self, pr: PullRow) -> str: ...
    def merge(self, pr: PullRow) -> None: ...


class QueueReader(Protocol):
    def stats(self) -> QueueStats: ...


class AgentsReader(Protocol):
    def agents(self, expected_hash: str | None = None) -> tuple[AgentRow, ...]: ...


class PoolReader(Protocol):
    def pools(self) -> tuple[Pool, ...]: ...

#: Redis URL when neither --redis-url nor RAIBID_REDIS_URL is given (a port-forward).
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Sources:
    """The backends the app reads; any may be None (its panel then says it is not configured)."""

    flux: FluxReader | None = None
    changes: ChangesReader | None = None
    queue: QueueReader | None = None
    agents: AgentsReader | None = None
    #: KEDA's agent pool (ScaledJobs and their Jobs), shown on the Agents tab.
    pool: PoolReader | None = None
    #: Shown in the header: the cluster and namespace being watched.
    where: str = ""

    def stop(self) -> None:
        """Unblock watches and close connections (called when the app exits)."""
        for s in (self.flux,):
            if s is not None and hasattr(s, "stop"):
                s.stop()
        for conn in {id(c): c for c in self._conns()}.values():
            conn.close()

    def _conns(self) -> list[Any]:
        out = []
        for s in (self.flux, self.changes, self.queue, self.agents):
            for attr in ("conn", "kube"):
                c = getattr(s, attr, None)
                if c is not None and hasattr(c, "close"):
                    out.append(c)
        return out


def build(*, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None,
          all_namespaces: bool = False, repo: Path | None = None, redis_url: str | None = None,
          gitea_url: str | None = None, gitea_token: str | None = None) -> Sources:
    """The real sources for ``raibid tui``'s options. Nothing connects here: each backend
    connects in its panel's worker, so an unreachable one only fails its own panel."""
    from raibid_tui.sources.agents import AgentsSource
    from raibid_tui.sources.changes import ChangesSource
    from raibid_tui.sources.flux import FluxSource
    from raibid_tui.sources.kube import KubeConn
    from raibid_tui.sources.pool import PoolSource
    from raibid_tui.sources.queue import QueueSource
    from raibid_tui.sources.redisconn import RedisConn

    kube = KubeConn(kubeconfig, context)
    redis_conn = RedisConn(redis_url or os.environ.get("RAIBID_REDIS_URL") or DEFAULT_REDIS_URL)
    agents = AgentsSource(redis_conn)
    changes = ChangesSource(repo, kube, gitea_url, gitea_token, agents=agents)
    settings = changes.settings()
    ns = None if all_namespaces else (namespace or "flux-system")
    flux = FluxSource(kube, ns, subject=changes.commit_subject)
    # The queue's names follow HEAD's settings: a fixed settings.yaml needs no restart.
    queue = QueueSource(redis_conn, changes.settings)
    pool = PoolSource(kubeconfig, context, settings.cluster.namespace if settings is not None else None)
    where = f"{context or 'current context'} · {'all namespaces' if ns is None else 'namespace ' + ns}"
    return Sources(flux=flux, changes=changes, queue=queue, agents=agents, pool=pool, where=where)
