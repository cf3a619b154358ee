"""Flux objects as data: conditions, revisions, readiness, suspend and reconcile requests — and
the actions on them (suspend, resume, reconcile and wait), the one implementation the CLI and
the TUI both call.

The data part is pure functions over the dicts the API returns, unit-tested without a cluster;
:mod:`raibid_gitops.gitops.sync` and :mod:`raibid_gitops.gitops.status` build on them. The
actions take a :class:`~raibid_gitops.clients.kube.Kube`.

Revisions: Flux v2 (source-controller >= v1.0) writes ``<ref>@<algo>:<digest>``, e.g.
``main@sha1:4b82...``; older controllers wrote ``main/4b82...``; a GitRepository on a bare
commit writes ``sha1:4b82...``. :func:`parse_revision` reads all three.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from raibid_gitops.gitops.layout import FLUX_NAMESPACE

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from raibid_gitops.clients.kube import Cancel, Kube, ObjectRef

SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
GIT_REPOSITORY = "GitRepository"
KUSTOMIZATION = "Kustomization"

#: The annotation Flux controllers watch: a new value asks for an immediate reconcile.
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
#: Labels kustomize-controller puts on every object it applies (ownership, pruning).
OWNER_NAME_LABEL = "kustomize.toolkit.fluxcd.io/name"
OWNER_NAMESPACE_LABEL = "kustomize.toolkit.fluxcd.io/namespace"
#: kustomize-controller's server-side apply field manager.
KUSTOMIZE_FIELD_MANAGER = "kustomize-controller"

#: Ready=False reasons that mean "not yet", not "failed": keep waiting.
TRANSIENT_REASONS = frozenset({
    "Progressing", "ProgressingWithRetry", "DependencyNotReady", "ReconciliationInProgress", "NewRevision",
})

# Matched whole (fullmatch): a revision is one line, and ``$`` would also take a trailing newline.
_REVISION = re.compile(r"(?:(?P<ref>.+?)@)?(?P<algo>sha1|sha256):(?P<digest>[0-9a-f]+)")
_LEGACY = re.compile(r"(?P<ref>.+)/(?P<digest>[0-9a-f]{40}|[0-9a-f]{64})")


@dataclass(frozen=True)
class Revision:
    """A parsed Flux revision. ``digest`` is the commit SHA for a GitRepository."""

    ref: str | None
    algo: str
    digest: str

    @property
    def short(self) -> str:
        return self.digest[:12]

    def __str__(self) -> str:
        return f"{self.ref}@{self.algo}:{self.digest}" if self.ref else f"{self.algo}:{self.digest}"


def parse_revision(text: str | None) -> Revision | None:
    """``main@sha1:<sha>`` (or the legacy ``main/<sha>``, or ``sha1:<sha>``) -> Revision;
    None for an empty or unreadable value."""
    if not text:
        return None
    text = text.strip()
    m = _REVISION.fullmatch(text)
    if m:
        return Revision(m.group("ref"), m.group("algo"), m.group("digest"))
    m = _LEGACY.fullmatch(text)
    if m:
        digest = m.group("digest")
        return Revision(m.group("ref"), "sha1" if len(digest) == 40 else "sha256", digest)
    if re.fullmatch(r"[0-9a-f]{40}", text):
        return Revision(None, "sha1", text)
    return None


def format_revision(text: str | None, width: int = 12) -> str:
    """A revision shortened for a table: ``main@sha1:4b825dc642cb``."""
    rev = parse_revision(text)
    if rev is None:
        return text or ""
    return f"{rev.ref}@{rev.algo}:{rev.digest[:width]}" if rev.ref else f"{rev.algo}:{rev.digest[:width]}"


# --- conditions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    observed_generation: int | None = None
    last_transition: str | None = None

    @property
    def true(self) -> bool:
        return self.status == "True"

    @property
    def false(self) -> bool:
        return self.status == "False"


def conditions(obj: Mapping[str, Any]) -> dict[str, Condition]:
    out: dict[str, Condition] = {}
    for c in (obj.get("status") or {}).get("conditions") or []:
        out[str(c.get("type"))] = Condition(
            type=str(c.get("type")), status=str(c.get("status", "Unknown")), reason=str(c.get("reason", "")),
            message=str(c.get("message", "")), observed_generation=c.get("observedGeneration"),
            last_transition=c.get("lastTransitionTime"),
        )
    return out


def condition(obj: Mapping[str, Any], type_: str) -> Condition | None:
    return conditions(obj).get(type_)


# --- object state ----------------------------------------------------------------------------


def name_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def describe(obj: Mapping[str, Any]) -> str:
    """``Kustomization flux-system/raibid-config``: how messages name a Flux object."""
    return f"{obj.get('kind', 'object')} {name_of(obj)}"


def generation_current(obj: Mapping[str, Any]) -> bool:
    """The controller has seen the latest spec (status.observedGeneration == generation)."""
    gen = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return gen is not None and observed is not None and int(observed) >= int(gen)


def is_suspended(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("spec") or {}).get("suspend"))


def is_ready(obj: Mapping[str, Any]) -> bool:
    c = condition(obj, "Ready")
    return bool(c and c.true and generation_current(obj))


def is_reconciling(obj: Mapping[str, Any]) -> bool:
    c = condition(obj, "Reconciling")
    return bool(c and c.true)


def is_stalled(obj: Mapping[str, Any]) -> bool:
    c = condition(obj, "Stalled")
    return bool(c and c.true)


def failure(obj: Mapping[str, Any]) -> Condition | None:
    """The condition that says the last attempt failed: Stalled=True, or Ready=False with a
    reason that is not merely "in progress"; None otherwise."""
    conds = conditions(obj)
    stalled = conds.get("Stalled")
    if stalled and stalled.true:
        return stalled
    ready = conds.get("Ready")
    if ready and ready.false and ready.reason not in TRANSIENT_REASONS:
        return ready
    return None


def artifact_revision(source: Mapping[str, Any]) -> str | None:
    """The revision of the artifact a source last produced (what Kustomizations consume)."""
    art = (source.get("status") or {}).get("artifact") or {}
    return art.get("revision")


def applied_revision(ks: Mapping[str, Any]) -> str | None:
    return (ks.get("status") or {}).get("lastAppliedRevision")


def attempted_revision(ks: Mapping[str, Any]) -> str | None:
    return (ks.get("status") or {}).get("lastAttemptedRevision")


def revision(obj: Mapping[str, Any]) -> str | None:
    """The revision a status table shows: artifact for sources, applied for Kustomizations."""
    if obj.get("kind") == KUSTOMIZATION:
        return applied_revision(obj)
    return artifact_revision(obj)


def last_handled(obj: Mapping[str, Any]) -> str | None:
    """The requestedAt value the controller has handled (status.lastHandledReconcileAt)."""
    return (obj.get("status") or {}).get("lastHandledReconcileAt")


def source_ref(ks: Mapping[str, Any]) -> tuple[str, str, str]:
    """(kind, namespace, name) of a Kustomization's source; namespace defaults to its own."""
    ref = (ks.get("spec") or {}).get("sourceRef") or {}
    ns = ref.get("namespace") or (ks.get("metadata") or {}).get("namespace") or FLUX_NAMESPACE
    return str(ref.get("kind", GIT_REPOSITORY)), str(ns), str(ref.get("name", ""))


def depends_on(ks: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(namespace, name) of the Kustomizations this one waits for (spec.dependsOn)."""
    own_ns = (ks.get("metadata") or {}).get("namespace") or FLUX_NAMESPACE
    return [(str(d.get("namespace") or own_ns), str(d["name"])) for d in (ks.get("spec") or {}).get("dependsOn") or []]


# --- writes as patches -------------------------------------------------------------------------


def request_token(now: datetime | None = None) -> str:
    """A requestedAt value. Flux compares it as an opaque string; RFC 3339 with nanoseconds,
    as ``flux reconcile`` writes, keeps two requests within a second distinct."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}000Z"


def reconcile_patch(token: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {REQUESTED_AT: token}}}


def suspend_patch(suspend: bool) -> dict[str, Any]:
    # resume removes the field (null in a merge patch), as `flux resume` does.
    return {"spec": {"suspend": True if suspend else None}}


# --- building objects (bootstrap, tests, the benchmark) ----------------------------------------


def git_repository(name: str, namespace: str, *, url: str, branch: str = "main", interval: str = "1m",
                   secret: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"interval": interval, "url": url, "ref": {"branch": branch}}
    if secret:
        spec["secretRef"] = {"name": secret}
    return {"apiVersion": SOURCE_API, "kind": GIT_REPOSITORY,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def kustomization(name: str, namespace: str, *, source: str, path: str = "./overlays/dgx-spark",
                  interval: str = "1m", prune: bool = True, wait: bool = False, timeout: str = "5m",
                  depends: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "interval": interval, "path": path, "prune": prune, "wait": wait, "timeout": timeout,
        "sourceRef": {"kind": GIT_REPOSITORY, "name": source},
    }
    if depends:
        spec["dependsOn"] = [{"name": d} for d in depends]
    return {"apiVersion": KUSTOMIZE_API, "kind": KUSTOMIZATION,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


# --- actions ---------------------------------------------------------------------------------------


def api_of(kind: str) -> str:
    """The apiVersion raibid uses for a Flux ``kind``."""
    if kind == KUSTOMIZATION:
        return KUSTOMIZE_API
    if kind == GIT_REPOSITORY:
        return SOURCE_API
    from raibid_gitops.errors import ConfigRepoError

    raise ConfigRepoError(f"{kind!r} is not a Flux kind raibid acts on (GitRepository, Kustomization)")


def object_ref(kind: str, name: str, namespace: str) -> ObjectRef:
    from raibid_gitops.clients.kube import ObjectRef

    return ObjectRef(api_of(kind), kind, name, namespace)


def set_suspended(kube: Kube, ref: ObjectRef, suspend: bool) -> dict[str, Any]:
    """Suspend, or resume as `flux resume` does: remove ``spec.suspend`` and request a reconcile
    (a resumed object otherwise waits for its next interval)."""
    patch: dict[str, Any] = suspend_patch(suspend)
    if not suspend:
        patch.update(reconcile_patch(request_token()))
    return kube.patch(ref, patch, verb="suspend" if suspend else "resume")


def refuse_suspended(obj: Mapping[str, Any], action: str = "reconcile") -> None:
    if is_suspended(obj):
        from raibid_gitops.errors import Suspended

        kind = "source" if obj.get("kind") == GIT_REPOSITORY else "kustomization"
        meta = obj.get("metadata") or {}
        raise Suspended(f"{describe(obj)} is suspended: Flux will not {action} it until it is resumed",
                        hint=f"raibid gitops resume {kind} {meta.get('name')} -n {meta.get('namespace')}")


def wait_handled(kube: Kube, ref: ObjectRef, token: str, *, deadline: float,
                 report: Callable[[str], None] = lambda _t: None, cancel: Cancel | None = None) -> dict[str, Any]:
    """Watch ``ref`` until its controller has handled the request ``token`` at the current
    generation; Ready -> the object, a failure (:func:`failure`) -> SyncFailed, the deadline ->
    SyncTimeout. A transient Ready=False (DependencyNotReady, Progressing) keeps waiting."""
    import time

    from raibid_gitops.errors import SyncFailed, SyncTimeout

    last: dict[str, Any] | None = None
    for obj in kube.watch_object(ref, deadline=deadline, chunk=5, cancel=cancel):
        if obj is not None:
            last = obj
            if last_handled(obj) == token and generation_current(obj):
                if is_ready(obj):
                    return obj
                failed = failure(obj)
                if failed is not None:
                    raise SyncFailed(f"{ref} failed: {failed.reason}: {failed.message}".rstrip(": "))
            ready = condition(obj, "Ready")
            report(f"waiting for {ref} ({ready.reason if ready and ready.reason else 'no Ready condition yet'})")
        if time.monotonic() >= deadline:
            break
    if cancel is not None and cancel.is_set():
        raise SyncTimeout(f"stopped waiting for {ref} (cancelled)")
    ready = condition(last, "Ready") if last else None
    raise SyncTimeout(f"{ref} did not finish reconciling in time"
                      + (f" (last: {ready.reason}: {ready.message})" if ready else ""),
                      hint="`raibid gitops status -o wide` shows its conditions")


def reconcile(kube: Kube, ref: ObjectRef, *, with_source: bool = True, timeout: float = 300.0,
              report: Callable[[str], None] = lambda _t: None, cancel: Cancel | None = None) -> str:
    """`flux reconcile`, and wait: for a Kustomization (``with_source``), first its source is
    asked to fetch and waited for, then the Kustomization. Returns the revision it ends at
    (artifact for a source, lastAppliedRevision for a Kustomization). Raises Suspended,
    SyncFailed (with the controller's reason and message), SyncTimeout."""
    import time

    deadline = time.monotonic() + timeout
    obj = kube.get(ref)
    refuse_suspended(obj)
    if ref.kind == KUSTOMIZATION and with_source:
        from raibid_gitops.clients.kube import ObjectRef as Ref

        kind, ns, name = source_ref(obj)
        src = Ref(api_of(kind), kind, name, ns)
        refuse_suspended(kube.get(src))
        token = request_token()
        kube.annotate(src, {REQUESTED_AT: token})
        report(f"asked {src} to fetch")
        done = wait_handled(kube, src, token, deadline=deadline, report=report, cancel=cancel)
        report(f"{src} at {format_revision(artifact_revision(done))}; applying")
    token = request_token()
    kube.annotate(ref, {REQUESTED_AT: token})
    report(f"asked {ref} to reconcile")
    done = wait_handled(kube, ref, token, deadline=deadline, report=report, cancel=cancel)
    return str(revision(done) or "")
