"""Where the TUI's Kubernetes sources connect: the CLI's one client layer
(:mod:`raibid_gitops.clients.kube`), so both follow the same kubeconfig rules, map errors the
same way and share one connection per (kubeconfig, context)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.clients.kube import Kube


class KubeConn:
    """The (kubeconfig, context) to connect with; nothing connects until :meth:`kube` is
    called (in a worker), so an unreachable cluster only fails its own panel."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.server = ""

    def kube(self) -> Kube:
        """The shared client; raises KubeError when the configuration cannot be loaded."""
        from raibid_gitops.clients.kube import connect

        kube = connect(self.kubeconfig, self.context)
        self.server = kube.server
        return kube

    def close(self) -> None:
        """Nothing to close: the client is the process's shared one (closed at exit)."""
