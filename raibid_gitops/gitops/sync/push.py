"""Sync's first stage: bring the local branch and the remote together, verifying what is
pushed. Git through :mod:`raibid_gitops.clients.git` (a real git failure raises; only git's
documented "no" of ``merge-base --is-ancestor`` means "not an ancestor")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from raibid_gitops.clients.git import is_ancestor, rev_parse
from raibid_gitops.errors import BranchDiverged, ConfigRepoError, GitError, PushRejected

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.clients.git import Repo

REMOTE = "origin"


@dataclass(frozen=True)
class PushOutcome:
    commit: str
    pushed: bool
    note: str | None = None


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
        known = rev_parse(repo, tracking)
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
            ahead = _count(repo, f"{known}..{head}") if known and is_ancestor(repo, known, head) else None
            # git push updates the tracking ref; keep it right even if the config says otherwise.
            repo.git("update-ref", tracking, head)
            return PushOutcome(head, pushed=True,
                               note=f"pushed {ahead if ahead is not None else 'new'} commit(s) to {REMOTE}/{branch}")
    repo.fetch(REMOTE, f"+refs/heads/{branch}:{tracking}")
    remote = rev_parse(repo, tracking)
    if remote == head:
        return PushOutcome(head, pushed=False)
    if remote is None or is_ancestor(repo, remote, head):
        if remote is None:
            raise ConfigRepoError(f"{REMOTE}/{branch} does not exist and --no-push was given",
                                  hint="drop --no-push to push it")
        ahead = _count(repo, f"{remote}..{head}")
        return PushOutcome(remote, pushed=False,
                           note=f"{ahead} local commit(s) not pushed (--no-push): waiting for {REMOTE}/{branch} "
                                f"at {remote[:12]} instead of HEAD")
    if is_ancestor(repo, head, remote):
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
