"""`raibid gitops sync`: push, ask Flux to reconcile, and wait until *that commit* is applied.

``flux reconcile`` waits for Ready but never checks which commit became ready
(fluxcd/flux2#479). Here the stages are:

1. **push** — unpushed commits are pushed; a diverged branch is refused (never force-pushed).
2. **request** — the GitRepository gets a new ``reconcile.fluxcd.io/requestedAt`` annotation
   (merge patch, retried on conflict); Kustomizations are annotated only where the artifact
   change will not trigger them (see :func:`sync`).
3. **source** — watch the GitRepository until ``status.artifact.revision`` is the pushed commit
   or a newer one that contains it (Flux skips intermediate commits; ancestry is checked with
   ``git merge-base --is-ancestor`` after a fetch).
4. **apply** — watch each Kustomization (dependencies first, following ``dependsOn``) until
   ``lastAppliedRevision`` covers the commit, ``Ready=True`` and ``observedGeneration`` is current.
   A failed attempt at the commit (``BuildFailed``, ``HealthCheckFailed``, ...) stops with the
   condition's reason and message.
5. **scaler** — KEDA must accept every ScaledJob the Kustomization applied: its ``Ready``
   condition True (KEDA parsed the trigger and reached Redis), or the sync fails with KEDA's
   message (see :mod:`raibid_gitops.gitops.keda`). Flux alone would call a pool that can never
   scale "applied".
6. **agents** (``--wait-agents``) — wait until every live agent's heartbeat reports the settings
   hash of the applied commit.

All waiting is on Kubernetes watches (and, for agents, on Redis keyspace reads paced by the
heartbeat interval); the only clock is the overall ``--timeout``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raibid_gitops.errors import ConfigRepoError, KubeNotFound, SyncFailed
from raibid_gitops.gitops import flux, keda
from raibid_gitops.gitops.layout import FLUX_NAMESPACE, FLUX_OBJECT_NAME
from raibid_gitops.gitops.reporting import Reporter, Silent
from raibid_gitops.gitops.sync.agents import AgentsOutcome, SettingsAt, settings_at, wait_agents
from raibid_gitops.gitops.sync.push import REMOTE, PushOutcome, push_if_needed, verify_commit
from raibid_gitops.gitops.sync.scaler import _scaled_jobs_before, wait_scalers
from raibid_gitops.gitops.sync.waiting import (
    Ancestry,
    collect_kustomizations,
    nudge_dependents,
    refuse_suspended,
    source_ref_of,
    wait_kustomization,
    wait_source,
)

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.clients.git import Repo
    from raibid_gitops.clients.kube import Kube

DEFAULT_TIMEOUT = 300.0

__all__ = [
    "DEFAULT_TIMEOUT", "REMOTE", "AgentsOutcome", "Ancestry", "PushOutcome", "SettingsAt", "SyncOptions",
    "SyncResult", "collect_kustomizations", "format_duration", "push_if_needed", "settings_at", "sync",
    "verify_commit", "wait_agents",
]


@dataclass
class SyncResult:
    commit: str
    pushed: bool
    source: str
    kustomizations: dict[str, str] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0
    agents: AgentsOutcome | None = None
    #: "namespace/name" of each ScaledJob -> KEDA's Ready reason once it accepted it.
    scalers: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit, "pushed": self.pushed, "source": self.source,
            "kustomizations": self.kustomizations, "stages": {k: round(v, 3) for k, v in self.stages.items()},
            "scalers": self.scalers,
            "elapsed": round(self.elapsed, 3),
            "agents": None if self.agents is None else {
                "settingsHash": self.agents.settings_hash, "agents": self.agents.agents, "note": self.agents.note,
            },
        }


@dataclass(frozen=True)
class SyncOptions:
    kustomization: str = FLUX_OBJECT_NAME
    namespace: str = FLUX_NAMESPACE
    timeout: float = DEFAULT_TIMEOUT
    push: bool = True
    wait_agents: bool = False
    redis_url: str | None = None
    redis_password: str | None = None
    #: Run verify on a commit before pushing it (``--no-verify`` turns it off, loudly).
    verify: bool = True


def format_duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def sync(repo_dir: Path, kube: Kube, options: SyncOptions, progress: Reporter | None = None,
         *, repo: Repo | None = None) -> SyncResult:
    from raibid_gitops.clients.git import Repo as GitRepo
    from raibid_gitops.clients.git import auth_from_env

    progress = progress or Silent()
    t0 = time.monotonic()
    deadline = t0 + options.timeout
    timeout_text = format_duration(options.timeout)
    stages: dict[str, float] = {}
    repo = repo or GitRepo(repo_dir, auth=auth_from_env())
    branch = repo.branch()
    if branch == "HEAD":
        raise ConfigRepoError(f"{repo.path} is on a detached HEAD", hint="check out the branch Flux watches (main)")

    # Look at Flux first: refuse a suspended object before pushing anything.
    kss = collect_kustomizations(kube, options.kustomization, options.namespace)
    target_ks = kss[-1]
    scaler_watch = keda.ScalerWatch(kube, _scaled_jobs_before(kube, kss),
                                    keda_version=lambda: keda.installed_version(kube))
    src_ref = source_ref_of(target_ks)
    try:
        source = kube.get(src_ref)
    except KubeNotFound as exc:
        raise KubeNotFound(f"{src_ref} not found (the source of {flux.describe(target_ks)})", status=404) from exc
    refuse_suspended([source, *kss])
    flux_branch = ((source.get("spec") or {}).get("ref") or {}).get("branch")
    if flux_branch and flux_branch != branch:
        raise ConfigRepoError(f"{src_ref} follows branch {flux_branch!r} but {repo.path} is on {branch!r}",
                              hint=f"git checkout {flux_branch}")
    if repo.is_dirty():
        progress.note("uncommitted changes are not synced (commit them first)")

    def check(commit: str) -> None:
        if options.verify:
            verify_commit(repo, commit)
        else:
            progress.note(f"WARNING: pushing {commit[:12]} without verify (--no-verify): Flux may apply settings "
                          "that agents refuse or manifests that do not build")

    outcome = push_if_needed(repo, branch, push=options.push, check=check)
    if outcome.note:
        progress.note(outcome.note)
    stages["push"] = time.monotonic() - t0
    target = outcome.commit
    ancestry = Ancestry(repo, target, branch)

    # Ask the source. Kustomizations of the same source are not asked now: kustomize-controller
    # would start a reconcile of the *old* revision, and the artifact change would wait for it
    # to finish (measured: +0.3-1 s per sync, and a needless second apply). The artifact change
    # triggers them by itself. Dependencies with another source are asked right away.
    from raibid_gitops.clients.kube import ObjectRef

    token = flux.request_token()
    t = time.monotonic()
    kube.annotate(src_ref, {flux.REQUESTED_AT: token})
    same = [source_ref_of(ks) == src_ref for ks in kss]
    for ks, is_same in zip(kss, same, strict=True):
        if not is_same:
            kube.annotate(ObjectRef.of(ks), {flux.REQUESTED_AT: token})
    progress.done("request", f"asked Flux to fetch {branch}@{target[:12]} into {src_ref}")
    stages["request"] = time.monotonic() - t

    t = time.monotonic()
    _, artifact_changed = wait_source(kube, src_ref, ancestry, token, deadline, progress, timeout_text)
    stages["source"] = time.monotonic() - t
    if not artifact_changed:
        # The source had the commit already: no artifact event will come, so ask each
        # Kustomization that has not applied it yet (one that failed at this commit retries).
        for ks, is_same in zip(kss, same, strict=True):
            if not is_same:
                continue
            now = kube.get(ObjectRef.of(ks))
            if not (ancestry.covers(flux.applied_revision(now)) and flux.is_ready(now)):
                kube.annotate(ObjectRef.of(ks), {flux.REQUESTED_AT: token})

    t = time.monotonic()
    applied: dict[str, str] = {}
    final: dict[str, Any] = target_ks
    for i, (ks, is_same) in enumerate(zip(kss, same, strict=True)):
        final = wait_kustomization(kube, ks, ancestry if is_same else None, token, deadline, progress, timeout_text,
                                   fresh_artifact=is_same and artifact_changed, scalers=scaler_watch)
        applied[flux.name_of(final)] = flux.applied_revision(final) or ""
        if is_same:
            nudge_dependents(kube, final, kss[i + 1:], ancestry, token)
    stages["apply"] = time.monotonic() - t

    t = time.monotonic()
    scalers = wait_scalers(kube, kss, scaler_watch, deadline, progress, timeout_text)
    if scalers:
        stages["scaler"] = time.monotonic() - t

    agents: AgentsOutcome | None = None
    if options.wait_agents:
        from raibid_gitops.clients.redis import connect

        applied_rev = flux.parse_revision(flux.applied_revision(final))
        want = settings_at(repo, applied_rev.digest if applied_rev else target)
        # Settings that do not validate are still waited on: the agents that refuse them are named.
        url = options.redis_url or want.redis_url
        if not url:
            raise SyncFailed(f"the settings at {want.commit[:12]} do not validate: {want.error}",
                             hint="pass --redis-url to see which agents refused them")
        t = time.monotonic()
        client = connect(url, password=options.redis_password)
        agents = wait_agents(client, want, deadline, progress, timeout_text)
        stages["agents"] = time.monotonic() - t

    return SyncResult(commit=target, pushed=outcome.pushed, source=str(src_ref), kustomizations=applied,
                      stages=stages, elapsed=time.monotonic() - t0, agents=agents, scalers=scalers)
