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

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from raibid_gitops.errors import (
    BranchDiverged,
    ConfigRepoError,
    GitError,
    KubeNotFound,
    PushRejected,
    SettingsError,
    SyncFailed,
    SyncTimeout,
)
from raibid_gitops.gitops import flux, keda
from raibid_gitops.gitops.layout import FLUX_NAMESPACE, FLUX_OBJECT_NAME, SETTINGS_PATH

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.clients.git import Repo
    from raibid_gitops.clients.kube import Kube, ObjectRef

DEFAULT_TIMEOUT = 300.0
REMOTE = "origin"


# --- progress ---------------------------------------------------------------------------------


class Progress:
    """Live progress on stderr: ``[  3.1s] apply  flux-system/raibid-config  main@sha1:4b82..``.

    On a terminal the current line is rewritten in place; otherwise a line is printed only when
    the state changes, so logs stay short.
    """

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False, clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.clock = clock
        self.start = clock()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = ""
        self._open_line = False

    def elapsed(self) -> float:
        return self.clock() - self.start

    def update(self, stage: str, text: str) -> None:
        if self.quiet:
            return
        line = f"{stage:<7} {text}"
        if line == self._last and not self.tty:
            return
        self._last = line
        stamp = f"[{self.elapsed():6.1f}s] "
        if self.tty:
            self.stream.write("\r\033[K" + stamp + line)
            self._open_line = True
        else:
            self.stream.write(stamp + line + "\n")
        self.stream.flush()

    def done(self, stage: str, text: str) -> None:
        """A stage finished: always its own line."""
        if self.quiet:
            return
        stamp = f"[{self.elapsed():6.1f}s] "
        prefix = "\r\033[K" if self.tty and self._open_line else ""
        self.stream.write(f"{prefix}{stamp}{stage:<7} {text}\n")
        self.stream.flush()
        self._open_line = False
        self._last = ""

    def note(self, text: str) -> None:
        self.done("note", text)


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushOutcome:
    commit: str
    pushed: bool
    note: str | None = None


@dataclass(frozen=True)
class AgentsOutcome:
    settings_hash: str
    agents: dict[str, str]
    note: str | None = None


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


# --- git --------------------------------------------------------------------------------------


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
        try:
            self.repo.git("merge-base", "--is-ancestor", self.target, sha)
            result = True
        except GitError:
            result = False
        self._known[sha] = result
        return result


def _rev(repo: Repo, ref: str) -> str | None:
    try:
        return repo.git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip() or None
    except GitError:
        return None


def _is_ancestor(repo: Repo, a: str, b: str) -> bool:
    try:
        repo.git("merge-base", "--is-ancestor", a, b)
        return True
    except GitError:
        return False


def _count(repo: Repo, spec: str) -> int:
    return int(repo.git("rev-list", "--count", spec).strip() or 0)


def push_if_needed(repo: Repo, branch: str, *, push: bool = True,
                   check: Callable[[str], None] | None = None) -> PushOutcome:
    """Bring origin/<branch> and the local branch together; returns the commit to wait for.

    - in step: nothing to do;
    - ahead: ``check(HEAD)`` (verify), then push (or, with ``push=False``, wait for what origin
      has and say so);
    - behind (a PR was merged, someone else pushed): fast-forward the local branch and wait for
      origin's head, so what sync reports is what the cluster will run; when the working tree is
      in the way, say so and wait for origin's head;
    - diverged: refuse; sync never force-pushes.

    With ``push`` the push is tried first and the remote is fetched only when it refuses (a
    push of a commit origin already has is refused as non-fast-forward too): the common case
    (new local commits) then costs one round trip to Gitea, not two.
    """
    if repo.remote_url(REMOTE) is None:
        raise ConfigRepoError(f"{repo.path} has no remote {REMOTE!r}",
                              hint="add the Gitea repository: git remote add origin URL")
    head = repo.head()
    tracking = f"refs/remotes/{REMOTE}/{branch}"
    if push:
        known = _rev(repo, tracking)
        if known != head and check is not None:
            check(head)
        try:
            repo.push(REMOTE, f"HEAD:refs/heads/{branch}")
        except PushRejected as exc:
            if not exc.non_fast_forward:
                raise
        else:
            if known == head:
                return PushOutcome(head, pushed=False)
            ahead = _count(repo, f"{known}..{head}") if known and _is_ancestor(repo, known, head) else None
            # git push updates the tracking ref; keep it right even if the config says otherwise.
            repo.git("update-ref", tracking, head)
            return PushOutcome(head, pushed=True,
                               note=f"pushed {ahead if ahead is not None else 'new'} commit(s) to {REMOTE}/{branch}")
    repo.fetch(REMOTE, f"+refs/heads/{branch}:{tracking}")
    remote = _rev(repo, tracking)
    if remote == head:
        return PushOutcome(head, pushed=False)
    if remote is None or _is_ancestor(repo, remote, head):
        if remote is None:
            raise ConfigRepoError(f"{REMOTE}/{branch} does not exist and --no-push was given",
                                  hint="drop --no-push to push it")
        ahead = _count(repo, f"{remote}..{head}")
        return PushOutcome(remote, pushed=False,
                           note=f"{ahead} local commit(s) not pushed (--no-push): waiting for {REMOTE}/{branch} "
                                f"at {remote[:12]} instead of HEAD")
    if _is_ancestor(repo, head, remote):
        behind = _count(repo, f"{head}..{remote}")
        try:
            repo.git("merge", "--ff-only", "--quiet", tracking)
        except GitError:
            return PushOutcome(remote, pushed=False,
                               note=f"local {branch} is {behind} commit(s) behind {REMOTE}/{branch} and could not be "
                                    f"fast-forwarded (uncommitted changes in the way): waiting for {REMOTE}/{branch} "
                                    f"at {remote[:12]}, not your HEAD {head[:12]}")
        return PushOutcome(remote, pushed=False,
                           note=f"fast-forwarded {branch} from {head[:12]} to {REMOTE}/{branch} at {remote[:12]} "
                                f"({behind} new commit(s)); waiting for {remote[:12]}")
    ahead, behind = _count(repo, f"{remote}..{head}"), _count(repo, f"{head}..{remote}")
    raise BranchDiverged(
        f"local {branch} and {REMOTE}/{branch} have diverged ({ahead} local and {behind} remote commit(s) "
        f"not in the other); sync does not force-push",
        hint=f"integrate the remote changes first: git pull --rebase {REMOTE} {branch}, then run sync again",
    )


def verify_commit(repo: Repo, commit: str) -> None:
    """Refuse to push a commit ``raibid gitops verify`` rejects (VerifyFailed lists why).

    The commit's own tree is checked (exported with ``git archive``), not the working tree,
    which may hold uncommitted edits that are not being pushed."""
    import io
    import tarfile
    import tempfile

    from raibid_gitops.errors import VerifyFailed
    from raibid_gitops.gitops.verify import verify

    if not repo.is_dirty() and repo.head() == commit:
        report = verify(repo.path)
    else:
        with tempfile.TemporaryDirectory(prefix="raibid-sync-verify-") as tmp:
            data = repo.git_bytes("archive", "--format=tar", commit)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                tar.extractall(tmp, filter="data")
            report = verify(Path(tmp))
    if not report.ok:
        raise VerifyFailed(report.problems, subject=f"{commit[:12]} was not pushed: verify found",
                           hint="fix it and commit, or revert it (`raibid gitops revert`); "
                                "`raibid gitops sync --no-verify` pushes it anyway")


@dataclass(frozen=True)
class SettingsAt:
    """``overlays/dgx-spark/settings.yaml`` at one commit, as the agents will get it."""

    commit: str
    #: ``settings.text_digest`` of the text: what an agent that refuses this version reports.
    digest: str
    #: The settings hash agents running this version report; None when it does not validate.
    hash: str | None
    #: Why it does not validate (empty when it does).
    error: str = ""
    redis_url: str | None = None


def settings_at(repo: Repo, commit: str) -> SettingsAt:
    from raibid_gitops.clients.redis import url_for
    from raibid_gitops.settings import load_text, text_digest

    try:
        text = repo.show(commit, SETTINGS_PATH)
    except GitError as exc:
        raise ConfigRepoError(f"cannot read {SETTINGS_PATH} at {commit[:12]}: {exc.message}") from None
    try:
        settings = load_text(text, file=f"{commit[:12]}:{SETTINGS_PATH}")
    except SettingsError as exc:
        return SettingsAt(commit, text_digest(text), None, exc.message)
    return SettingsAt(commit, text_digest(text), settings.hash(), redis_url=url_for(settings))


# --- Flux objects ----------------------------------------------------------------------------


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
            raise SyncFailed(f"Kustomization {ns}/{n} depends on itself: {' -> '.join(f'{a}/{b}' for a, b in (*chain, (ns, n)))}")
        if (ns, n) in seen:
            return
        try:
            obj = kube.get(ks_ref(n, ns))
        except KubeNotFound:
            if chain:
                raise KubeNotFound(f"Kustomization {ns}/{n} not found (a dependency of {chain[-1][0]}/{chain[-1][1]})",
                                   status=404) from None
            raise KubeNotFound(
                f"Kustomization {ns}/{n} not found",
                hint="apply the Flux objects (kubectl apply -k clusters/dgx-spark), or pass --kustomization/-n",
                status=404,
            ) from None
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


# --- the watches ------------------------------------------------------------------------------


#: Seconds between progress refreshes while nothing changes: each is a new watch request
#: from the last resourceVersion, so a terminal's elapsed counter stays live at little cost.
TTY_REFRESH_SECONDS = 1.0


def _watch(kube: Kube, ref: ObjectRef, deadline: float, progress: Progress,
           chunk: float | None = None) -> Iterator[dict[str, Any] | None]:
    from raibid_gitops.clients.kube import WATCH_CHUNK_SECONDS

    if chunk is None:
        chunk = TTY_REFRESH_SECONDS if progress.tty and not progress.quiet else WATCH_CHUNK_SECONDS
    for obj in kube.watch_object(ref, deadline=deadline, chunk=chunk):
        yield obj
        if time.monotonic() >= deadline:
            return


def wait_source(kube: Kube, ref: ObjectRef, ancestry: Ancestry, token: str, deadline: float,
                progress: Progress, timeout_text: str) -> tuple[dict[str, Any], bool]:
    """Until the GitRepository's artifact contains the commit; failures of a fetch that
    handled our request stop the wait. Returns the object and whether the artifact changed
    during the wait (False: it already contained the commit when we looked)."""
    target = ancestry.target
    last: dict[str, Any] | None = None
    changed = False
    for obj in _watch(kube, ref, deadline, progress):
        if obj is None:
            if last is not None:
                progress.update("source", f"{ref.namespace}/{ref.name} at {flux.format_revision(flux.artifact_revision(last))}, "
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
    state = f"it is at {flux.format_revision(flux.artifact_revision(last)) or '(no artifact)'}; {_cond_text(last)}" if last else ""
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
                       progress: Progress, timeout_text: str, *, fresh_artifact: bool = False,
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
                                 f"timeout runs out", hint=exc.hint) from None
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


# --- agents -----------------------------------------------------------------------------------


def live_agents(client: Any) -> dict[str, dict[str, str]]:
    """Heartbeat hashes of live agents, by id (a dead agent's key expires by its TTL)."""
    from raibid_gitops import contract

    prefix = contract.agent_key("")
    out: dict[str, dict[str, str]] = {}
    for key in client.scan_iter(match=contract.AGENT_PATTERN, count=200):
        data = client.hgetall(key)
        if data:
            out[key[len(prefix):]] = data
    return out


def wait_agents(client: Any, want: SettingsAt, deadline: float, progress: Progress, timeout_text: str,
                poll: float = 1.0) -> AgentsOutcome:
    """Until every live, non-draining agent reports the settings hash of ``want``; fails naming
    the agent and its reason as soon as one reports refusing exactly that version.

    Agents publish through a heartbeat hash, not a stream, so there is nothing to block on: we
    read at most once per ``poll`` seconds (agents heartbeat every queue.heartbeatSeconds).
    """
    from raibid_gitops import contract
    from raibid_gitops.clients.redis import redis_errors

    at = want.commit[:12]
    target = want.hash or f"the settings of {at}"
    while True:
        with redis_errors(client, "reading agent heartbeats"):
            agents = live_agents(client)
        active = {a: d for a, d in agents.items() if d.get(contract.AGENT_STATE) != contract.AGENT_STATE_DRAINING}
        hashes = {a: d.get(contract.AGENT_SETTINGS_HASH, "") for a, d in active.items()}
        if not active:
            if want.hash is None:
                raise SyncFailed(f"the settings at {at} do not validate: {want.error}")
            note = "no agent is running: the new settings take effect when the next agent starts"
            progress.done("agents", note)
            return AgentsOutcome(want.hash, {}, note=note)
        # Matched by the refused text's digest, so an older refusal is never blamed on this commit.
        refused = sorted(a for a, d in active.items() if d.get(contract.AGENT_SETTINGS_REFUSED) == want.digest)
        if refused:
            a = refused[0]
            others = f" (refused by {len(refused) - 1} more: {', '.join(refused[1:4])})" if len(refused) > 1 else ""
            raise SyncFailed(f"agent {a} refused the settings of {at} and keeps {hashes[a] or 'no settings'}: "
                             f"{active[a].get(contract.AGENT_SETTINGS_ERROR) or 'no reason given'}{others}")
        behind = sorted(a for a, h in hashes.items() if want.hash is None or h != want.hash)
        if not behind:
            progress.done("agents", f"{len(active)} agent(s) run settings {want.hash}")
            return AgentsOutcome(want.hash or "", hashes)
        progress.update("agents", f"{len(active) - len(behind)}/{len(active)} agent(s) on {target}; "
                                  f"waiting for {', '.join(behind[:3])}{' ...' if len(behind) > 3 else ''}")
        if time.monotonic() >= deadline:
            invalid = f" (they do not validate: {want.error})" if want.hash is None else ""
            raise SyncTimeout(f"timed out after {timeout_text} waiting for agents to report {target}{invalid}; "
                              f"still on other settings: " + ", ".join(f"{a} ({hashes[a] or '?'})" for a in behind))
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


# --- the whole flow -------------------------------------------------------------------------


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


def sync(repo_dir: Path, kube: Kube, options: SyncOptions, progress: Progress | None = None,
         *, repo: Repo | None = None) -> SyncResult:
    from raibid_gitops.clients.git import Repo as GitRepo
    from raibid_gitops.clients.git import auth_from_env

    progress = progress or Progress()
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
    except KubeNotFound:
        raise KubeNotFound(f"{src_ref} not found (the source of {flux.describe(target_ks)})", status=404) from None
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
    for ks, is_same in zip(kss, same):
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
        for ks, is_same in zip(kss, same):
            if not is_same:
                continue
            now = kube.get(ObjectRef.of(ks))
            if not (ancestry.covers(flux.applied_revision(now)) and flux.is_ready(now)):
                kube.annotate(ObjectRef.of(ks), {flux.REQUESTED_AT: token})

    t = time.monotonic()
    applied: dict[str, str] = {}
    final: dict[str, Any] = target_ks
    for i, (ks, is_same) in enumerate(zip(kss, same)):
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


# --- KEDA -------------------------------------------------------------------------------------


def _scaled_jobs_before(kube: Kube, kss: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int | None, str]]:
    """Generation and KEDA verdict of each ScaledJob the Kustomizations applied last time."""
    out: dict[tuple[str, str], tuple[int | None, str]] = {}
    for ks in kss:
        for ns, name in keda.scaled_jobs_in(ks):
            out[(ns, name)] = keda.ScalerWatch.snapshot(kube.get_or_none(keda.ref(ns, name)))
    return out


def wait_scalers(kube: Kube, kss: list[dict[str, Any]], watch: keda.ScalerWatch, deadline: float,
                 progress: Progress, timeout_text: str) -> dict[str, str]:
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
