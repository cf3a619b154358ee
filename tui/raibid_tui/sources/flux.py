"""Flux objects for the TUI: GitRepositories and Kustomizations as frozen rows, kept live by
Kubernetes watches (list once, then watch from the resourceVersion; relist only on 410 Gone),
their events, and the two actions (reconcile with source, suspend/resume).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from raibid_gitops.errors import KubeError
from raibid_gitops.gitops import flux as fluxlib
from raibid_gitops.gitops.flux import parse_revision
from raibid_tui.sources.kube import KubeConn


@dataclass(frozen=True)
class FluxKind:
    kind: str
    group: str
    version: str
    plural: str


GIT_REPOSITORY = FluxKind("GitRepository", "source.toolkit.fluxcd.io", "v1", "gitrepositories")
KUSTOMIZATION = FluxKind("Kustomization", "kustomize.toolkit.fluxcd.io", "v1", "kustomizations")
KINDS = {k.kind: k for k in (GIT_REPOSITORY, KUSTOMIZATION)}

#: Server-side watch timeout: the API server ends a watch after this; we resume from the last
#: resourceVersion (no relist). Shorter than typical proxy idle timeouts.
WATCH_SECONDS = 240
#: Retry delay after a failed list/watch, doubled up to the max (the API server may be restarting).
RETRY_MIN, RETRY_MAX = 1.0, 30.0

#: READY values of a row: what `flux get` shows, plus "Waiting" for a Ready=False whose reason
#: the library counts as "not yet" (fluxlib.TRANSIENT_REASONS) and that names another object
#: (DependencyNotReady): nothing is wrong with this one, it waits for its dependencies.
READY, FAILED, STALLED, RECONCILING, WAITING, UNKNOWN = (
    "Ready", "Failed", "Stalled", "Reconciling", "Waiting", "Unknown")
#: The statuses that mean the last attempt failed (fluxlib.failure found a condition).
FAILED_STATUSES = frozenset({FAILED, STALLED})
#: Transient Ready=False reasons shown as Waiting rather than Reconciling.
WAITING_REASONS = frozenset({"DependencyNotReady"})


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition: str = ""


@dataclass(frozen=True)
class FluxRow:
    """One GitRepository or Kustomization, as the Flux tab shows it."""

    uid: str
    kind: str
    namespace: str
    name: str
    #: Ready / Failed / Stalled / Reconciling / Waiting / Unknown (:func:`status_of`).
    status: str
    reason: str = ""
    message: str = ""
    #: GitRepository: status.artifact.revision; Kustomization: status.lastAppliedRevision.
    revision: str = ""
    #: Kustomization: status.lastAttemptedRevision ("" for a GitRepository).
    attempted: str = ""
    #: Subject of the applied revision's commit in the config repo ("" when unknown).
    subject: str = ""
    #: Subject of the attempted revision's commit (the applied one's when they are the same).
    attempted_subject: str = ""
    suspended: bool = False
    created: datetime | None = None
    #: Kustomization: "GitRepository/ns/name"; GitRepository: its URL.
    source: str = ""
    generation: int = 0
    observed_generation: int = -1
    conditions: tuple[Condition, ...] = ()
    resource_version: str = ""

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def short_revision(self) -> str:
        return short_revision(self.revision)

    @property
    def new_attempt(self) -> bool:
        """Flux attempted another commit than the one applied (being applied, or failed)."""
        return bool(self.attempted) and sha_of(self.attempted) != sha_of(self.revision)

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    @property
    def failing_new_commit(self) -> bool:
        """A newer commit was attempted and failed; the cluster still runs the applied one.
        The row that must stand out."""
        return self.new_attempt and self.failed


@dataclass(frozen=True)
class EventRow:
    time: str
    type: str
    reason: str
    message: str
    source: str = ""


@dataclass(frozen=True)
class FluxUpdate:
    """What a watch delivers: ``reset`` replaces every row of ``kind``; otherwise
    ``rows`` are upserted and ``deleted`` uids removed."""

    kind: str
    rows: tuple[FluxRow, ...] = ()
    deleted: tuple[str, ...] = ()
    reset: bool = False


def sha_of(revision: str) -> str:
    """The commit SHA of a Flux revision (``main@sha1:<sha>``, ``sha1:<sha>`` or ``<sha>``)."""
    rev = parse_revision(revision)
    if rev is not None:
        return rev.digest
    return revision.rsplit(":", 1)[-1].rsplit("@", 1)[-1] if revision else ""


def short_revision(revision: str) -> str:
    """``main@sha1:0123456789ab...`` -> ``main@01234567`` (narrower than `flux get`'s form:
    the table also shows the commit's subject)."""
    if not revision:
        return ""
    rev = parse_revision(revision)
    branch = (rev.ref or "") if rev is not None else (revision.split("@", 1)[0] if "@" in revision else "")
    sha = sha_of(revision)[:8]
    return f"{branch}@{sha}" if branch else sha


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def status_of(obj: dict[str, Any]) -> tuple[str, str, str]:
    """(status, reason, message) of a Flux object, on the library's semantics
    (:func:`raibid_gitops.gitops.flux.failure`, shared with `raibid gitops status` and `sync`):

    - Stalled / Failed: the condition ``failure()`` finds (Stalled=True, or Ready=False with a
      reason that is not transient), even while Flux retries (Reconciling=True);
    - Waiting: Ready=False with DependencyNotReady (transient: nothing failed here);
    - Reconciling: Ready=False with another transient reason, Ready=Unknown, Reconciling=True,
      or a spec the controller has not observed yet;
    - Ready: Ready=True, nothing in progress; Unknown: no Ready condition yet.
    """
    conds = fluxlib.conditions(obj)
    failed = fluxlib.failure(obj)
    if failed is not None:
        return (STALLED if failed.type == "Stalled" else FAILED), failed.reason, failed.message
    ready = conds.get("Ready")
    reconciling = conds.get("Reconciling")
    in_progress = reconciling is not None and reconciling.true
    if ready is None:
        if reconciling is not None and in_progress:
            return RECONCILING, reconciling.reason, reconciling.message
        return UNKNOWN, "", "" if fluxlib.is_suspended(obj) else "waiting to be reconciled"
    if ready.false and ready.reason in WAITING_REASONS:
        return WAITING, ready.reason, ready.message
    if ready.true and not in_progress and _observed(obj):
        return READY, ready.reason, ready.message
    if reconciling is not None and in_progress:
        return RECONCILING, reconciling.reason or ready.reason, reconciling.message or ready.message
    # Ready=False with a transient reason, Ready=Unknown, or a spec not observed yet.
    return RECONCILING, ready.reason, ready.message


def _observed(obj: dict[str, Any]) -> bool:
    """The controller has seen the current spec. A suspended object counts as observed: the
    suspend itself bumped the generation and Flux does not reconcile it, so its status stays
    what it was (as `flux get` shows it). So does an object without a generation."""
    if fluxlib.is_suspended(obj) or (obj.get("metadata") or {}).get("generation") is None:
        return True
    return fluxlib.generation_current(obj)


def row_from_object(obj: dict[str, Any], subject: Callable[[str], str] | None = None) -> FluxRow:
    """The row of a GitRepository or Kustomization as the API returns it."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    st = obj.get("status") or {}
    kind = obj.get("kind") or ""
    conditions = tuple(
        Condition(type=str(c.get("type", "")), status=str(c.get("status", "")), reason=str(c.get("reason", "")),
                  message=str(c.get("message", "")), last_transition=str(c.get("lastTransitionTime", "")))
        for c in st.get("conditions") or ()
    )
    suspended = bool(spec.get("suspend", False))
    state, reason, message = status_of(obj)
    if kind == GIT_REPOSITORY.kind:
        revision = str((st.get("artifact") or {}).get("revision", ""))
        attempted = ""
        source = str(spec.get("url", ""))
    else:
        revision = str(st.get("lastAppliedRevision", ""))
        attempted = str(st.get("lastAttemptedRevision", ""))
        ref = spec.get("sourceRef") or {}
        source = f"{ref.get('kind', '')}/{ref.get('namespace') or meta.get('namespace', '')}/{ref.get('name', '')}"
    # The applied commit and the attempted one each keep their own subject: when they differ,
    # the cluster runs the first while Flux applies (or failed to apply) the second.
    applied_subject = subject(sha_of(revision)) if subject and revision else ""
    if attempted and sha_of(attempted) != sha_of(revision):
        attempted_subject = subject(sha_of(attempted)) if subject else ""
    else:
        attempted_subject = applied_subject if attempted else ""
    return FluxRow(
        uid=str(meta.get("uid", "")), kind=kind, namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")), status=state, reason=reason, message=message,
        revision=revision, attempted=attempted, subject=applied_subject, attempted_subject=attempted_subject,
        suspended=suspended, created=_parse_time(meta.get("creationTimestamp")), source=source,
        generation=int(meta.get("generation") or 0), observed_generation=int(st.get("observedGeneration", -1)),
        conditions=conditions, resource_version=str(meta.get("resourceVersion", "")),
    )


@dataclass
class FluxSource:
    """Flux objects in one namespace (or all, ``namespace=None``) of the cluster ``conn`` reaches,
    read through the CLI's Kubernetes layer (one list-and-watch loop, one error mapping) and
    acted on through the library's Flux actions (:mod:`raibid_gitops.gitops.flux`), so the TUI's
    suspend, resume and reconcile do exactly what the CLI's do.

    ``subject(sha)`` returns a commit's subject from the config repo (or "")."""

    conn: KubeConn
    namespace: str | None = None
    subject: Callable[[str], str] | None = None
    _cancel: Any = field(default=None, repr=False)
    #: Lists made per kind (the first, and one after each 410 Gone or failure).
    lists: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from raibid_gitops.clients.kube import Cancel

        self._cancel = Cancel()

    # -- reading ------------------------------------------------------------------------------

    def list(self, kind: str) -> tuple[tuple[FluxRow, ...], str]:
        """Every object of ``kind`` and the list's resourceVersion."""
        k = KINDS[kind]
        data = self.conn.kube().list(f"{k.group}/{k.version}", k.kind, self.namespace)
        rows = tuple(row_from_object({**o, "kind": k.kind}, self.subject) for o in data.get("items") or ())
        return rows, str((data.get("metadata") or {}).get("resourceVersion", ""))

    def watch(self, kind: str, emit: Callable[[FluxUpdate], None], on_error: Callable[[KubeError | None], None],
              stop: threading.Event) -> None:
        """List, then watch (relisting on 410 Gone) until ``stop`` is set or :meth:`stop` is
        called, calling ``emit`` for every change. A failure is reported to ``on_error`` and
        retried with backoff; ``on_error(None)`` when the connection is back."""
        k = KINDS[kind]
        delay = RETRY_MIN
        failed = False
        while not (stop.is_set() or self._cancel.is_set()):
            try:
                for ev in self.conn.kube().watch(f"{k.group}/{k.version}", k.kind, self.namespace,
                                                 chunk=WATCH_SECONDS, cancel=self._cancel):
                    if stop.is_set():
                        return
                    if ev.type == "SYNC":
                        self.lists[kind] = self.lists.get(kind, 0) + 1
                        rows = tuple(row_from_object({**o, "kind": k.kind}, self.subject)
                                     for o in (ev.items or {}).values())
                        emit(FluxUpdate(kind, rows=rows, reset=True))
                        if failed:
                            on_error(None)
                            failed = False
                        delay = RETRY_MIN
                    elif ev.type == "DELETED" and ev.obj is not None:
                        emit(FluxUpdate(k.kind, deleted=(str(ev.obj["metadata"].get("uid", "")),)))
                    elif ev.obj is not None:
                        emit(FluxUpdate(k.kind, rows=(row_from_object({**ev.obj, "kind": k.kind}, self.subject),)))
            except KubeError as exc:  # reported, then retried: the TUI never dies
                if stop.is_set() or self._cancel.is_set():
                    break
                on_error(exc)
                failed = True
                stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX)

    def stop(self) -> None:
        """End every running watch now (their sockets are shut down), so worker threads end."""
        self._cancel.set()

    def events(self, row: FluxRow, limit: int = 12) -> tuple[EventRow, ...]:
        """The most recent events about ``row`` (newest last)."""
        data = self.conn.kube().list("v1", "Event", row.namespace, field_selector=f"involvedObject.uid={row.uid}")
        out = []
        for ev in data.get("items") or ():
            stamp = (ev.get("lastTimestamp") or ev.get("eventTime") or ev.get("firstTimestamp")
                     or (ev.get("metadata") or {}).get("creationTimestamp"))
            when = _parse_time(stamp)
            src = ((ev.get("source") or {}).get("component") or "") or (ev.get("reportingComponent") or "")
            out.append((when or datetime.min.replace(tzinfo=UTC),
                        EventRow(time=when.strftime("%Y-%m-%d %H:%M:%S") if when else "", type=ev.get("type") or "",
                                 reason=ev.get("reason") or "", message=(ev.get("message") or "").strip(),
                                 source=src)))
        out.sort(key=lambda p: p[0])
        return tuple(e for _, e in out[-limit:])

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.conn.kube().get(fluxlib.object_ref(kind, name, namespace))

    # -- actions: the library's, as the CLI runs them --------------------------------------------

    def set_suspended(self, row: FluxRow, suspend: bool) -> None:
        fluxlib.set_suspended(self.conn.kube(), fluxlib.object_ref(row.kind, row.name, row.namespace), suspend)

    def reconcile(self, row: FluxRow, progress: Callable[[str], None], timeout: float = 300.0) -> str:
        """`raibid gitops reconcile` of ``row`` (a Kustomization with its source first); returns
        the revision it ends at. Raises Suspended / SyncFailed / SyncTimeout / KubeError."""
        return fluxlib.reconcile(self.conn.kube(), fluxlib.object_ref(row.kind, row.name, row.namespace),
                                 with_source=True, timeout=timeout, report=progress, cancel=self._cancel)
