"""Flux objects for the TUI: GitRepositories and Kustomizations as frozen rows, kept live by
Kubernetes watches (list once, then watch from the resourceVersion; relist only on 410 Gone),
their events, and the two actions (reconcile with source, suspend/resume).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from raibid_gitops.errors import KubeError, SyncFailed, SyncTimeout
from raibid_gitops.gitops import flux as fluxlib
from raibid_gitops.gitops.flux import parse_revision

from raibid_tui.sources.kube import KubeConn, kube_errors, translate


@dataclass(frozen=True)
class FluxKind:
    kind: str
    group: str
    version: str
    plural: str


GIT_REPOSITORY = FluxKind("GitRepository", "source.toolkit.fluxcd.io", "v1", "gitrepositories")
KUSTOMIZATION = FluxKind("Kustomization", "kustomize.toolkit.fluxcd.io", "v1", "kustomizations")
KINDS = {k.kind: k for k in (GIT_REPOSITORY, KUSTOMIZATION)}

#: The annotation `flux reconcile` sets; controllers copy it to status.lastHandledReconcileAt.
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"

#: Server-side watch timeout: the API server ends a watch after this; we resume from the last
#: resourceVersion (no relist). Shorter than typical proxy idle timeouts.
WATCH_SECONDS = 240
#: Client read timeout: a little longer than the server's, so a dead connection is noticed.
READ_TIMEOUT = WATCH_SECONDS + 30
#: Retry delay after a failed list/watch, doubled up to the max (the API server may be restarting).
RETRY_MIN, RETRY_MAX = 1.0, 30.0
#: How often the reconcile action polls the objects while waiting.
POLL_SECONDS = 1.0

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


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): relist."""


@dataclass
class FluxSource:
    """Flux objects in one namespace (or all, ``namespace=None``) of the cluster ``conn`` reaches.

    ``subject(sha)`` returns a commit's subject from the config repo (or "")."""

    conn: KubeConn
    namespace: str | None = None
    subject: Callable[[str], str] | None = None
    _responses: set[Any] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _closed: threading.Event = field(default_factory=threading.Event, repr=False)

    # -- reading ------------------------------------------------------------------------------

    def _list(self, k: FluxKind, **kw: Any) -> Any:
        api = self.conn.custom()
        if self.namespace:
            return api.list_namespaced_custom_object(k.group, k.version, self.namespace, k.plural, **kw)
        return api.list_cluster_custom_object(k.group, k.version, k.plural, **kw)

    def list(self, kind: str) -> tuple[tuple[FluxRow, ...], str]:
        """Every object of ``kind`` and the list's resourceVersion."""
        k = KINDS[kind]
        with kube_errors(f"list {k.plural}", self.conn.server):
            data = self._list(k, _request_timeout=(10, 60))
        rows = tuple(row_from_object({**o, "kind": k.kind}, self.subject) for o in data.get("items") or ())
        return rows, str((data.get("metadata") or {}).get("resourceVersion", ""))

    def watch(self, kind: str, emit: Callable[[FluxUpdate], None], on_error: Callable[[KubeError | None], None],
              stop: threading.Event) -> None:
        """List, then watch from the list's resourceVersion until ``stop`` is set, calling
        ``emit`` for every change. A failure is reported to ``on_error`` and retried with
        backoff; ``on_error(None)`` when the connection is back."""
        k = KINDS[kind]
        delay = RETRY_MIN
        rv = ""
        failed = False
        while not (stop.is_set() or self._closed.is_set()):
            try:
                if not rv:
                    rows, rv = self.list(kind)
                    emit(FluxUpdate(kind, rows=rows, reset=True))
                if failed:
                    on_error(None)
                    failed = False
                rv = self._watch_once(k, rv, emit, stop)
                delay = RETRY_MIN
            except _Gone:
                rv = ""
            except Exception as exc:  # noqa: BLE001 - reported, then retried: the TUI never dies
                if stop.is_set() or self._closed.is_set():
                    break
                on_error(translate(exc, f"watch {k.plural}", self.conn.server))
                failed = True
                rv = ""  # after an outage, relist: deletions may have been missed
                stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX)

    def _watch_once(self, k: FluxKind, rv: str, emit: Callable[[FluxUpdate], None], stop: threading.Event) -> str:
        from kubernetes.watch.watch import iter_resp_lines

        resp = self._list(k, watch=True, resource_version=rv, allow_watch_bookmarks=True,
                          timeout_seconds=WATCH_SECONDS, _preload_content=False,
                          _request_timeout=(10, READ_TIMEOUT))
        with self._lock:
            self._responses.add(resp)
        try:
            if stop.is_set() or self._closed.is_set():
                return rv
            for line in iter_resp_lines(resp):
                if stop.is_set() or self._closed.is_set():
                    break
                if not line:
                    continue
                event = json.loads(line)
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise KubeError(f"watch {k.plural}: {obj.get('message', obj)}", status=obj.get("code"))
                rv = str((obj.get("metadata") or {}).get("resourceVersion", rv))
                if etype == "BOOKMARK":
                    continue
                obj = {**obj, "kind": k.kind}
                if etype == "DELETED":
                    emit(FluxUpdate(k.kind, deleted=(str(obj["metadata"].get("uid", "")),)))
                else:
                    emit(FluxUpdate(k.kind, rows=(row_from_object(obj, self.subject),)))
            return rv
        finally:
            with self._lock:
                self._responses.discard(resp)
            resp.release_conn()

    def stop(self) -> None:
        """Unblock every running watch (shut its socket down) so worker threads end now."""
        self._closed.set()
        with self._lock:
            responses = list(self._responses)
        for resp in responses:
            try:
                resp.shutdown()
            except Exception:  # noqa: BLE001 - best effort on exit
                pass

    def events(self, row: FluxRow, limit: int = 12) -> tuple[EventRow, ...]:
        """The most recent events about ``row`` (newest last)."""
        with kube_errors(f"list events of {row.ref}", self.conn.server):
            data = self.conn.core().list_namespaced_event(
                row.namespace, field_selector=f"involvedObject.uid={row.uid}", _request_timeout=(10, 30))
        out = []
        for ev in data.items or ():
            when = ev.last_timestamp or ev.event_time or ev.first_timestamp or (ev.metadata.creation_timestamp)
            src = (ev.source.component if ev.source else "") or (ev.reporting_component or "")
            out.append((when or datetime.min.replace(tzinfo=timezone.utc),
                        EventRow(time=when.strftime("%Y-%m-%d %H:%M:%S") if when else "", type=ev.type or "",
                                 reason=ev.reason or "", message=(ev.message or "").strip(), source=src)))
        out.sort(key=lambda p: p[0])
        return tuple(e for _, e in out[-limit:])

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        k = KINDS[kind]
        with kube_errors(f"get {kind} {namespace}/{name}", self.conn.server):
            return self.conn.custom().get_namespaced_custom_object(k.group, k.version, namespace, k.plural, name,
                                                                   _request_timeout=(10, 30))

    # -- actions ------------------------------------------------------------------------------

    def _patch(self, kind: str, namespace: str, name: str, body: dict[str, Any], what: str) -> None:
        k = KINDS[kind]
        with kube_errors(f"{what} {kind} {namespace}/{name}", self.conn.server):
            self.conn.custom().patch_namespaced_custom_object(k.group, k.version, namespace, k.plural, name, body,
                                                              _request_timeout=(10, 30))

    def set_suspended(self, row: FluxRow, suspend: bool) -> None:
        self._patch(row.kind, row.namespace, row.name, {"spec": {"suspend": suspend}},
                    "suspend" if suspend else "resume")

    def request(self, kind: str, namespace: str, name: str) -> str:
        """Annotate the object with a new requestedAt token; returns the token."""
        token = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self._patch(kind, namespace, name, {"metadata": {"annotations": {REQUESTED_AT: token}}}, "reconcile")
        return token

    def reconcile(self, row: FluxRow, progress: Callable[[str], None], timeout: float = 300.0,
                  cancelled: Callable[[], bool] = lambda: False) -> str:
        """Reconcile ``row`` with its source: fetch the source, then wait until the Kustomization
        has applied that revision (or a newer one the source moved to meanwhile), is Ready and
        has observed its generation. Returns the applied revision; raises Suspended /
        SyncFailed / SyncTimeout / KubeError."""
        deadline = time.monotonic() + timeout
        if row.kind != KUSTOMIZATION.kind:
            self._refuse_suspended(row.kind, row.namespace, row.name)
            return self._request_and_wait(row.kind, row.namespace, row.name, progress, deadline, cancelled)
        obj = self._refuse_suspended(row.kind, row.namespace, row.name)
        ref = (obj.get("spec") or {}).get("sourceRef") or {}
        src_kind = ref.get("kind", GIT_REPOSITORY.kind)
        src_ns, src_name = ref.get("namespace") or row.namespace, ref.get("name", "")
        if src_kind not in KINDS:
            raise SyncFailed(f"{row.ref}: source kind {src_kind} is not supported by the TUI")
        self._refuse_suspended(src_kind, src_ns, src_name)
        revision = self._request_and_wait(src_kind, src_ns, src_name, progress, deadline, cancelled)
        progress(f"source {src_kind}/{src_ns}/{src_name} at {short_revision(revision)}; applying…")
        return self._request_and_wait(row.kind, row.namespace, row.name, progress, deadline, cancelled,
                                      want=revision, source=(src_kind, src_ns, src_name))

    def _refuse_suspended(self, kind: str, ns: str, name: str) -> dict[str, Any]:
        obj = self.get(kind, ns, name)
        if (obj.get("spec") or {}).get("suspend"):
            from raibid_gitops.errors import Suspended

            raise Suspended(f"{kind}/{ns}/{name} is suspended; resume it (s) before reconciling")
        return obj

    def _request_and_wait(self, kind: str, ns: str, name: str, progress: Callable[[str], None], deadline: float,
                          cancelled: Callable[[], bool], want: str = "",
                          source: tuple[str, str, str] | None = None) -> str:
        ref = f"{kind}/{ns}/{name}"
        token = self.request(kind, ns, name)
        progress(f"requested reconcile of {ref}")
        while True:
            if cancelled():
                raise SyncTimeout(f"{ref}: stopped waiting (cancelled)")
            obj = self.get(kind, ns, name)
            row = row_from_object({**obj, "kind": kind})
            handled = (obj.get("status") or {}).get("lastHandledReconcileAt") == token
            current = row.observed_generation == row.generation
            if kind == KUSTOMIZATION.kind and want:
                # The source may have moved on to a newer commit meanwhile (it contains ours).
                accept = {sha_of(want)}
                if source is not None:
                    accept.add(sha_of(row_from_object({**self.get(*source), "kind": source[0]}).revision))
                if handled and current and sha_of(row.attempted) in accept and row.failed:
                    raise SyncFailed(f"{ref} failed to apply {short_revision(row.attempted)}: "
                                     f"{row.reason}: {row.message}")
                if handled and current and sha_of(row.revision) in accept and row.status == READY:
                    progress(f"{ref} applied {row.short_revision} and is Ready")
                    return row.revision
                progress(f"waiting for {ref} to apply {short_revision(want)} "
                         f"(applied {row.short_revision or '-'}, {row.status})")
            else:
                if handled and current and row.status == READY and row.revision:
                    return row.revision
                if handled and current and row.failed:
                    raise SyncFailed(f"{ref}: {row.reason}: {row.message}")
                progress(f"waiting for {ref} ({row.status}{': ' + row.reason if row.reason else ''})")
            if time.monotonic() > deadline:
                raise SyncTimeout(f"{ref} did not finish reconciling in time (last: {row.status} {row.message})",
                                  hint="open the detail view (enter) for conditions and events")
            time.sleep(POLL_SECONDS)
