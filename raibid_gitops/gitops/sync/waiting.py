"""Sync's Flux stages: which Kustomizations, does a revision contain the commit, and the
watches on the source and on each Kustomization (:meth:`Kube.watch_object`, the one watch loop)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from raibid_gitops.clients.git import is_ancestor
from raibid_gitops.errors import GitError, KubeNotFound, SyncFailed, SyncTimeout
from raibid_gitops.gitops import flux, keda
from raibid_gitops.gitops.reporting import Reporter
from raibid_gitops.gitops.sync.push import REMOTE

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.clients.git import Repo
    from raibid_gitops.clients.kube import Kube, ObjectRef


class Ancestry:
    """Answers "does revision X contain our commit?" with the local clone, fetching once when
    Flux reports a commit we do not have yet."""

    def __init__(self, repo: Repo, target: str, branch: str):
        self.repo = repo
        self.target = target
        self.branch = branch
        self._known: dict[str, bool] = {target: True}
        self._fetched = False

    def _has(self, sha: str) -> bool:
        try:
            self.repo.git("cat-file", "-e", f"{sha}^{{commit}}")
            return True
        except GitError:
            return False

    def covers(self, revision: str | None) -> bool:
        rev = flux.parse_revision(revision)
        if rev is None:
            return False
        sha = rev.digest
        if sha in self._known:
            return self._known[sha]
        if not self._has(sha) and not self._fetched:
            self._fetched = True
            try:
                self.repo.fetch(REMOTE, self.branch)
            except GitError:
                pass  # judged below with what we have
        if not self._has(sha):
            # Unknown even after a fetch: a commit from another branch or history; not ours.
            return False
        result = is_ancestor(self.repo, self.target, sha)
        self._known[sha] = result
        return result


def ks_ref(name: str, namespace: str) -> ObjectRef:
    from raibid_gitops.clients.kube import ObjectRef

    return ObjectRef(flux.KUSTOMIZE_API, flux.KUSTOMIZATION, name, namespace)


def source_ref_of(ks: dict[str, Any]) -> ObjectRef:
    from raibid_gitops.clients.kube import ObjectRef

    kind, ns, name = flux.source_ref(ks)
    if kind != flux.GIT_REPOSITORY:
        raise SyncFailed(f"{flux.describe(ks)} takes its source from a {kind}; sync follows GitRepository sources only")
    return ObjectRef(flux.SOURCE_API, kind, name, ns)


def collect_kustomizations(kube: Kube, name: str, namespace: str) -> list[dict[str, Any]]:
    """The Kustomization and, before it, everything it depends on (depth-first, each once)."""
    ordered: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()

    def visit(ns: str, n: str, chain: tuple[tuple[str, str], ...]) -> None:
        if (ns, n) in chain:
            cycle = " -> ".join(f"{a}/{b}" for a, b in (*chain, (ns, n)))
            raise SyncFailed(f"Kustomization {ns}/{n} depends on itself: {cycle}")
        if (ns, n) in seen:
            return
        try:
            obj = kube.get(ks_ref(n, ns))
        except KubeNotFound as exc:
            if chain:
                raise KubeNotFound(f"Kustomization {ns}/{n} not found (a dependency of {chain[-1][0]}/{chain[-1][1]})",
                                   status=404) from None
            raise KubeNotFound(
                f"Kustomization {ns}/{n} not found",
                hint="apply the Flux objects (kubectl apply -k clusters/dgx-spark), or pass --kustomization/-n",
                status=404,
            ) from exc
        for dep_ns, dep in flux.depends_on(obj):
            visit(dep_ns, dep, (*chain, (ns, n)))
        seen.add((ns, n))
        ordered.append(obj)

    visit(namespace, name, ())
    return ordered


def refuse_suspended(objs: list[dict[str, Any]]) -> None:
    for obj in objs:
        flux.refuse_suspended(obj, "apply anything")


def _cond_text(obj: dict[str, Any]) -> str:
    ready = flux.condition(obj, "Ready")
    if ready is None:
        return "no Ready condition yet"
    return f"Ready={ready.status} {ready.reason}: {ready.message}".strip()


#: Seconds between progress refreshes while nothing changes: each is a new watch request
#: from the last resourceVersion, so a terminal's elapsed counter stays live at little cost.
TTY_REFRESH_SECONDS = 1.0


def _watch(kube: Kube, ref: ObjectRef, deadline: float, progress: Reporter,
           chunk: float | None = None) -> Iterator[dict[str, Any] | None]:
    from raibid_gitops.clients.kube import WATCH_CHUNK_SECONDS

    if chunk is None:
        chunk = TTY_REFRESH_SECONDS if progress.live else WATCH_CHUNK_SECONDS
    for obj in kube.watch_object(ref, deadline=deadline, chunk=chunk):
        yield obj
        if time.monotonic() >= deadline:
            return


def wait_source(kube: Kube, ref: ObjectRef, ancestry: Ancestry, token: str, deadline: float,
                progress: Reporter, timeout_text: str) -> tuple[dict[str, Any], bool]:
    """Until the GitRepository's artifact contains the commit; failures of a fetch that
    handled our request stop the wait. Returns the object and whether the artifact changed
    during the wait (False: it already contained the commit when we looked)."""
    target = ancestry.target
    last: dict[str, Any] | None = None
    changed = False
    for obj in _watch(kube, ref, deadline, progress):
        if obj is None:
            if last is not None:
                progress.update("source", f"{ref.namespace}/{ref.name} at "
                                          f"{flux.format_revision(flux.artifact_revision(last))}, "
                                          f"waiting for {target[:12]}")
            continue
        last = obj
        art = flux.artifact_revision(obj)
        if ancestry.covers(art) and flux.generation_current(obj):
            rev = flux.parse_revision(art)
            progress.done("source", f"{ref} has {flux.format_revision(art)}"
                                    + ("" if rev and rev.digest == target else f" (contains {target[:12]})"))
            return obj, changed
        changed = True
        failed = flux.failure(obj)
        if failed and flux.last_handled(obj) == token and flux.generation_current(obj):
            raise SyncFailed(
                f"{ref} could not fetch {target[:12]}: {failed.reason}: {failed.message}",
                hint="check the GitRepository's URL, branch and the raibid-config-auth Secret",
            )
        progress.update("source", f"{ref.namespace}/{ref.name} at {flux.format_revision(art) or '(no artifact)'}, "
                                  f"waiting for {target[:12]}")
    state = (f"it is at {flux.format_revision(flux.artifact_revision(last)) or '(no artifact)'}; {_cond_text(last)}"
             if last else "")
    hint = "is the commit pushed to the branch Flux watches? `raibid gitops status` shows Flux's view"
    if last is not None and flux.last_handled(last) == token and not flux.failure(last):
        # The fetch that handled our request started after the push and still did not see it.
        from raibid_gitops.clients.git import redact

        url = redact(str((last.get("spec") or {}).get("url", "?")))
        pushed_to = redact(ancestry.repo.remote_url(REMOTE) or REMOTE)
        hint = (f"Flux fetched {url} after the push and the commit was not there: does the GitRepository "
                f"follow the repository you pushed to ({pushed_to})?")
    raise SyncTimeout(f"timed out after {timeout_text} waiting for {ref} to fetch {target[:12]}; {state}", hint=hint)


def wait_kustomization(kube: Kube, ks: dict[str, Any], ancestry: Ancestry | None, token: str, deadline: float,
                       progress: Reporter, timeout_text: str, *, fresh_artifact: bool = False,
                       scalers: keda.ScalerWatch | None = None) -> dict[str, Any]:
    """Until the Kustomization has applied the commit (or, for a dependency with another
    source, has handled our request and is Ready). A failed attempt at the commit stops.

    While Flux health-checks an attempt at the commit, ``scalers`` is asked on every tick for
    KEDA's verdict on the ScaledJobs: a rejection stops the wait at once, where Flux would
    report HealthCheckFailed only when ``spec.timeout`` runs out."""
    from raibid_gitops.clients.kube import ObjectRef

    ref = ObjectRef.of(ks)
    target = ancestry.target if ancestry else None
    last: dict[str, Any] | None = None
    # Seen an attempt at an older revision first: the next attempt covering the commit is a
    # fresh one, made for this sync.
    seen_older_attempt = False
    # With a scaler check the watch ticks every second, so KEDA's verdict is read while Flux
    # sits in its health check (no Kustomization event comes then).
    for obj in _watch(kube, ref, deadline, progress, chunk=TTY_REFRESH_SECONDS if scalers else None):
        if obj is None:
            if last is None:
                continue
            obj = last  # a tick: judge the last state again (KEDA's verdict may have come)
        last = obj
        if flux.is_suspended(obj):
            refuse_suspended([obj])
        applied, attempted = flux.applied_revision(obj), flux.attempted_revision(obj)
        if ancestry is not None:
            reached = ancestry.covers(applied)
            tried = ancestry.covers(attempted)
        else:
            reached = tried = flux.last_handled(obj) == token
        if reached and flux.is_ready(obj):
            progress.done("apply", f"{ref} applied {flux.format_revision(applied)}, Ready")
            return obj
        failed = flux.failure(obj)
        # Only a failure of an attempt made during this sync counts: one at an artifact that
        # appeared during this sync, one that handled our request, or one that followed an
        # attempt at an older revision. An old failure at the same commit may have been
        # transient (a health check, an API hiccup): it is retried first.
        fresh = fresh_artifact or flux.last_handled(obj) == token or seen_older_attempt
        if failed and tried and fresh and flux.generation_current(obj):
            raise SyncFailed(_failure_message(ref, obj, failed, target))
        if scalers is not None and tried and fresh:
            try:
                scalers.check(keda.scaled_jobs_in(obj))
            except SyncFailed as exc:
                raise SyncFailed(f"{exc.message}\n  {ref} is still running health checks at "
                                 f"{flux.format_revision(attempted)}; Flux reports HealthCheckFailed when its "
                                 f"timeout runs out", hint=exc.hint) from exc
        if not tried:
            seen_older_attempt = True
        progress.update("apply", _apply_state(ref, obj, target))
    state = _apply_state(ref, last, target) if last else "no state seen"
    extra = ""
    if last is not None and flux.attempted_revision(last) != flux.applied_revision(last):
        extra = (f"; lastAttemptedRevision {flux.format_revision(flux.attempted_revision(last)) or '(none)'} "
                 f"!= lastAppliedRevision {flux.format_revision(flux.applied_revision(last)) or '(none)'}")
    says = f"\n  {_flux_says(last)}" if last is not None else ""
    raise SyncTimeout(f"timed out after {timeout_text} waiting for {ref} to apply "
                      f"{target[:12] if target else 'the request'}: {state}{extra}{says}")


def _apply_state(ref: ObjectRef, obj: dict[str, Any], target: str | None) -> str:
    applied = flux.format_revision(flux.applied_revision(obj)) or "(nothing applied)"
    want = f", waiting for {target[:12]}" if target else ""
    ready = flux.condition(obj, "Ready")
    cond = f" [{ready.reason}]" if ready and ready.reason else ""
    return f"{ref.namespace}/{ref.name} at {applied}{cond}{want}"


def _flux_says(obj: dict[str, Any]) -> str:
    """What Flux itself says it is doing (Reconciling, else Ready), e.g. which health check it
    is running: the part a timeout message needs most."""
    for kind in ("Reconciling", "Ready"):
        c = flux.condition(obj, kind)
        if c and c.message.strip():
            return f"Flux says ({kind} {c.reason}): {' '.join(c.message.split())[:600]}"
    return "Flux has not said what it is doing (no Reconciling or Ready message)"


def _failure_message(ref: ObjectRef, obj: dict[str, Any], cond: flux.Condition, target: str | None) -> str:
    attempted, applied = flux.attempted_revision(obj), flux.applied_revision(obj)
    lines = [f"{ref} failed to apply {flux.format_revision(attempted) or (target or '')[:12]}: {cond.reason}",
             f"  {cond.message.strip()}"]
    if attempted != applied:
        lines.append(f"  lastAttemptedRevision {flux.format_revision(attempted)} != lastAppliedRevision "
                     f"{flux.format_revision(applied) or '(none)'}: the cluster still runs the previous commit")
    return "\n".join(lines)


def nudge_dependents(kube: Kube, done: dict[str, Any], later: list[dict[str, Any]], ancestry: Ancestry,
                     token: str) -> None:
    """Ask each later Kustomization that depends on ``done`` (now applied) to reconcile.

    One that reconciled on the new artifact before its dependency had applied it found the
    dependency not ready and is waiting out kustomize-controller's ``--requeue-dependency``
    (30 s by default); a request starts it now."""
    from raibid_gitops.clients.kube import ObjectRef

    me = tuple(flux.name_of(done).split("/", 1))
    for ks in later:
        if me not in flux.depends_on(ks):
            continue
        now = kube.get(ObjectRef.of(ks))
        if not (ancestry.covers(flux.applied_revision(now)) and flux.is_ready(now)):
            kube.annotate(ObjectRef.of(ks), {flux.REQUESTED_AT: token})
