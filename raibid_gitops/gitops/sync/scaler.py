"""Sync's scaler stage: KEDA must accept every ScaledJob the Kustomizations applied (see
:mod:`raibid_gitops.gitops.keda` for why a verdict is waited for)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raibid_gitops.gitops import keda
from raibid_gitops.gitops.reporting import Reporter

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.clients.kube import Kube


def _scaled_jobs_before(kube: Kube, kss: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int | None, str]]:
    """Generation and KEDA verdict of each ScaledJob the Kustomizations applied last time."""
    out: dict[tuple[str, str], tuple[int | None, str]] = {}
    for ks in kss:
        for ns, name in keda.scaled_jobs_in(ks):
            out[(ns, name)] = keda.ScalerWatch.snapshot(kube.get_or_none(keda.ref(ns, name)))
    return out


def wait_scalers(kube: Kube, kss: list[dict[str, Any]], watch: keda.ScalerWatch, deadline: float,
                 progress: Reporter, timeout_text: str) -> dict[str, str]:
    """Until KEDA accepts every ScaledJob the (now applied) Kustomizations hold."""
    from raibid_gitops.clients.kube import ObjectRef

    targets: list[tuple[str, str]] = []
    for ks in kss:
        now = kube.get(ObjectRef.of(ks))
        targets += [t for t in keda.scaled_jobs_in(now) if t not in targets]
    if not targets:
        return {}
    verdicts = watch.wait(targets, deadline=deadline, timeout_text=timeout_text,
                          report=lambda text: progress.update("scaler", text))
    out = {}
    for (ns, name), v in verdicts.items():
        progress.done("scaler", f"ScaledJob {ns}/{name} accepted by KEDA ({v.reason})")
        out[f"{ns}/{name}"] = v.reason
    return out
