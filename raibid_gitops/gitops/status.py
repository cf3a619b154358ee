"""`raibid gitops status`: Flux's view of the config repository, and whether HEAD is applied.

One row per GitRepository and Kustomization: NAME, REVISION, SUSPENDED, READY, REASON,
MESSAGE, and HEAD — whether the local config repository's HEAD is applied there (below);
then one row per agent pool (each ScaledJob a Kustomization applied): KEDA's verdict, the agent
Jobs KEDA runs against the live ``maxReplicaCount``, and ``agents.maxReplicas`` as committed at
HEAD — the pool as it is beside the pool as committed.

- ``applied``  the applied revision is HEAD or a newer commit containing it;
- ``pending``  not applied yet (pushed or not);
- ``FAILED``   Flux attempted a commit containing HEAD and it failed: the cluster still runs
  the previous one. Such rows also get a line under the table (and red on a terminal);
- ``-``        the object follows another repository (its revision is not in this clone).

Exit code: 0 when every object is Ready and KEDA accepted every pool, 1 when one is not
(Ready False or Unknown, a ScaledJob KEDA rejects or has not judged yet), >1 on errors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from queue import Queue
from typing import TYPE_CHECKING, Any

from raibid_gitops.errors import ConfigRepoError, GitError, RaibidError
from raibid_gitops.gitops import flux, keda

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.clients.git import Repo
    from raibid_gitops.clients.kube import Kube

HEADERS = ("NAME", "REVISION", "SUSPENDED", "READY", "REASON", "MESSAGE", "HEAD")
#: A table cell longer than this is cut in the middle (-o wide and -o yaml/json have it whole).
MESSAGE_WIDTH = 80
#: Of a cut cell, this much of the end is kept: Flux and kustomize put the cause last
#: ("kustomize build failed: accumulating resources: ...: no such file or directory").
MESSAGE_TAIL = 45
KINDS = ((flux.SOURCE_API, flux.GIT_REPOSITORY), (flux.KUSTOMIZE_API, flux.KUSTOMIZATION))


@dataclass(frozen=True)
class Row:
    kind: str
    namespace: str
    name: str
    revision: str
    suspended: bool
    ready: str
    reason: str
    message: str
    last_attempted: str | None
    last_applied: str | None
    head: str  # applied | pending | FAILED | - (another repository) | "" (no repository)

    @property
    def failing_new_commit(self) -> bool:
        return (self.kind == flux.KUSTOMIZATION and self.ready == "False"
                and bool(self.last_attempted) and self.last_attempted != self.last_applied)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lastAttemptedRevision"] = d.pop("last_attempted")
        d["lastAppliedRevision"] = d.pop("last_applied")
        d["failingNewCommit"] = self.failing_new_commit
        return d


class HeadCheck:
    """Is HEAD contained in a revision Flux reports? Answers from the local clone only (no
    fetch: status must be quick and work offline)."""

    def __init__(self, repo: Repo):
        self.repo = repo
        self.head = repo.head()
        self._cache: dict[str, bool | None] = {}

    def contains_head(self, revision: str | None) -> bool | None:
        """True/False, or None when the revision is not a commit of this repository."""
        rev = flux.parse_revision(revision)
        if rev is None:
            return None
        sha = rev.digest
        if sha not in self._cache:
            try:
                self.repo.git("cat-file", "-e", f"{sha}^{{commit}}")
            except GitError:
                self._cache[sha] = None
            else:
                try:
                    self.repo.git("merge-base", "--is-ancestor", self.head, sha)
                    self._cache[sha] = True
                except GitError:
                    self._cache[sha] = False
        return self._cache[sha]


def row_of(obj: dict[str, Any], head: HeadCheck | None) -> Row:
    meta = obj.get("metadata") or {}
    ready = flux.condition(obj, "Ready")
    kind = str(obj.get("kind"))
    attempted = flux.attempted_revision(obj) if kind == flux.KUSTOMIZATION else None
    applied = flux.applied_revision(obj) if kind == flux.KUSTOMIZATION else flux.artifact_revision(obj)
    head_state = ""
    if head is not None:
        state = head.contains_head(applied)
        if state is None and applied is None:
            state = head.contains_head(attempted)
            state = False if state is not None else None
        if state is None:
            head_state = "-"
        elif state:
            head_state = "applied"
        else:
            failed = flux.failure(obj)
            head_state = "FAILED" if (failed and head.contains_head(attempted)) else "pending"
    reconciling = flux.is_reconciling(obj)
    ready_text = ready.status if ready else "Unknown"
    if ready and ready.true and not flux.generation_current(obj):
        ready_text = "Unknown"
    return Row(
        kind=kind, namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")),
        revision=flux.revision(obj) or "", suspended=flux.is_suspended(obj), ready=ready_text,
        reason=(ready.reason if ready else ("Progressing" if reconciling else "")),
        message=(ready.message if ready else ""), last_attempted=attempted, last_applied=applied,
        head=head_state,
    )


POOL_HEADERS = ("POOL", "KEDA", "REASON", "RUNNING", "MAX", "HEAD MAX", "SUCCEEDED", "FAILED")


def collect_pools(kube: Kube, objs: Iterable[dict[str, Any]]) -> list[keda.Pool]:
    """The pool of each ScaledJob in the Kustomizations' inventories."""
    from raibid_gitops.gitops.keda import KEDA_API, SCALED_JOB, SCALED_JOB_LABEL, pool_of, ref

    seen: set[tuple[str, str]] = set()
    out = []
    for obj in objs:
        if obj.get("kind") != flux.KUSTOMIZATION:
            continue
        for ns, name in keda.scaled_jobs_in(obj):
            if (ns, name) in seen:
                continue
            seen.add((ns, name))
            sj = kube.get_or_none(ref(ns, name))
            if sj is None:
                continue
            sj.setdefault("apiVersion", KEDA_API)
            sj.setdefault("kind", SCALED_JOB)
            jobs = kube.list("batch/v1", "Job", ns, label_selector=f"{SCALED_JOB_LABEL}={name}").get("items") or []
            out.append(pool_of(sj, jobs))
    return sorted(out, key=lambda p: (p.namespace, p.name))


def committed_max_replicas(head: HeadCheck | None) -> int | None:
    """agents.maxReplicas in settings.yaml at HEAD, or None outside a config repository."""
    if head is None:
        return None
    from raibid_gitops.gitops.layout import SETTINGS_PATH
    from raibid_gitops.settings import load_text

    try:
        return load_text(head.repo.show(head.head, SETTINGS_PATH)).agents.max_replicas
    except RaibidError:
        return None


def collect(kube: Kube, namespace: str | None) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for api, kind in KINDS:
        data = kube.list(api, kind, namespace)
        for item in data.get("items") or []:
            item.setdefault("apiVersion", api)
            item.setdefault("kind", kind)
            objs.append(item)
    return objs


def rows(objs: Iterable[dict[str, Any]], head: HeadCheck | None) -> list[Row]:
    out = [row_of(o, head) for o in objs]
    order = {flux.GIT_REPOSITORY: 0, flux.KUSTOMIZATION: 1}
    return sorted(out, key=lambda r: (order.get(r.kind, 2), r.namespace, r.name))


def head_check(repo_dir: Path | None) -> HeadCheck | None:
    """The HeadCheck of the config repository at ``repo_dir`` (or the current one), or None
    when status runs outside any config repository."""
    from raibid_gitops.clients.git import Repo
    from raibid_gitops.gitops.layout import find_repo_root

    try:
        root = find_repo_root(repo_dir)
        return HeadCheck(Repo(root))
    except (ConfigRepoError, GitError):
        if repo_dir is not None:
            raise
        return None


def exit_code(rs: list[Row], pools: list[keda.Pool]) -> int:
    """0 when every object is Ready and every pool accepted by KEDA; 1 otherwise (as for
    `diff`, >1 is left to errors)."""
    healthy = all(r.ready == "True" for r in rs) and all(p.verdict.accepted for p in pools)
    return 0 if healthy else 1


def watch_objects(kube: Kube, namespace: str | None) -> Iterator[list[dict[str, Any]]]:
    """Every GitRepository and Kustomization (of ``namespace``, or all), again after each change
    that changes a row: one watch thread per kind feeds a queue. Runs until the caller stops."""
    updates: Queue[tuple[str, Any]] = Queue()
    stop = threading.Event()

    def pump(api: str, kind: str) -> None:
        try:
            for snapshot in kube.watch_list(api, kind, namespace):
                if stop.is_set():
                    return
                updates.put((kind, snapshot))
        except RaibidError as exc:
            updates.put(("error", exc))

    for api, kind in KINDS:
        threading.Thread(target=pump, args=(api, kind), daemon=True, name=f"watch-{kind}").start()
    state: dict[str, dict[str, Any]] = {}
    last_rows: list[Row] | None = None
    try:
        while True:
            kind, data = updates.get()
            if kind == "error":
                raise data
            state[kind] = data
            if len(state) < len(KINDS):
                continue
            objs = [o for snap in state.values() for o in snap.values()]
            now = rows(objs, None)
            if now != last_rows:
                last_rows = now
                yield objs
    finally:
        stop.set()
