"""The agent pool for the TUI: each ScaledJob of the settings' namespace with KEDA's verdict
and the agent Jobs KEDA runs (through the CLI's Kubernetes layer and KEDA semantics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.gitops.keda import Pool


class PoolSource:
    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        #: The workload namespace (cluster.namespace); None: every namespace.
        self.namespace = namespace

    def pools(self) -> tuple[Pool, ...]:
        from raibid_gitops.clients.kube import connect
        from raibid_gitops.gitops.keda import pools

        return tuple(pools(connect(self.kubeconfig, self.context), self.namespace))
