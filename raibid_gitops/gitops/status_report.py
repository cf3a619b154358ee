"""Report ``raibid gitops verify`` as the Gitea commit status ``raibid/verify``, and find the
Gitea repository a config repository belongs to.

Where the repository is, in order: ``RAIBID_GITEA_URL`` (a base URL like
``http://gitea:3000``, or a repository URL), the ``origin`` remote if it is an http(s) URL,
then settings.yaml's ``gitea.url/owner/repo`` (the URL as the cluster reaches it, which a
workstation may not). The token: ``RAIBID_GITEA_TOKEN``/``RAIBID_GITEA_TOKEN_FILE``, else
git's credential helper for the repository URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from raibid_gitops.errors import ConfigRepoError, GiteaError

if TYPE_CHECKING:
    from raibid_gitops.clients.gitea import Gitea, RepoRef
    from raibid_gitops.gitops.verify import Report

#: The commit status context; branch protection can require it by this name.
CONTEXT = "raibid/verify"


def resolve_target(root: Path | None = None, *, url: str | None = None, remote: str = "origin") -> RepoRef:
    """The Gitea repository of the config repository at ``root`` (or the one ``url`` names)."""
    from raibid_gitops.clients.git import refuse_credentials
    from raibid_gitops.clients.gitea import RepoRef, parse_repo_url

    env_url = os.environ.get("RAIBID_GITEA_URL", "").strip().rstrip("/")
    if url:
        refuse_credentials(url, "--gitea-url")
    if env_url:
        refuse_credentials(env_url, "RAIBID_GITEA_URL")
    explicit = parse_repo_url(url) if url else None
    if url and explicit is None:
        raise ConfigRepoError(f"{url} is not an http(s) repository URL",
                              hint="give it as http(s)://HOST[:PORT]/OWNER/REPO")
    if explicit is not None:
        return explicit
    from_remote: RepoRef | None = None
    settings_ref: RepoRef | None = None
    if root is not None:
        from raibid_gitops.clients.git import Repo
        from raibid_gitops.errors import GitError

        try:
            remote_url = Repo(root).remote_url(remote)
        except GitError:
            remote_url = None
        from_remote = parse_repo_url(remote_url) if remote_url else None
        if from_remote is None:
            from raibid_gitops.gitops import layout
            from raibid_gitops.settings import load_path

            try:
                g = load_path(root / layout.SETTINGS_PATH).gitea
                settings_ref = RepoRef(base_url=g.url, owner=g.owner, name=g.repo)
            except Exception:  # noqa: BLE001 - an invalid settings.yaml just gives no fallback
                settings_ref = None
    if env_url:
        # RAIBID_GITEA_URL is the server as this machine reaches it (settings.yaml holds the
        # in-cluster URL); owner and name still come from the remote or the settings.
        known = from_remote or settings_ref
        if known is not None:
            return RepoRef(base_url=env_url, owner=known.owner, name=known.name)
        as_repo = parse_repo_url(env_url)
        if as_repo is not None:
            return as_repo
    found = from_remote or settings_ref
    if found is None:
        raise ConfigRepoError(
            "cannot tell which Gitea repository this is: no http(s) remote 'origin' and no settings.yaml",
            hint="add the remote (`git remote add origin http://HOST/OWNER/REPO.git`) or set RAIBID_GITEA_URL",
        )
    return found


def client_for(ref: RepoRef) -> Gitea:
    """An authenticated client for ``ref``'s server; refuses early without a token."""
    from raibid_gitops.clients.git import auth_from_env, credential_token
    from raibid_gitops.clients.gitea import Gitea

    auth = auth_from_env() or credential_token(ref.clone_url)
    if auth is None:
        raise GiteaError(
            f"no Gitea token for {ref.web_url}",
            hint="set RAIBID_GITEA_TOKEN (or RAIBID_GITEA_TOKEN_FILE), or store it in git's credential helper",
        )
    return Gitea(ref.base_url, auth.token)


@dataclass(frozen=True)
class StatusPosted:
    repo: str
    sha: str
    state: str
    description: str


def describe(report: Report) -> tuple[str, str]:
    """(state, description) of a verify report, short enough for Gitea's status line."""
    if report.ok:
        return "success", f"ok: {report.checked_fields} marked fields, {len(report.objects)} objects valid"
    first = report.problems[0].format()
    more = f" (+{len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
    return "failure", f"{len(report.problems)} problem(s): {first}{more}"


def post_status(client: Gitea, ref: RepoRef, sha: str, report: Report, *,
                target_url: str | None = None) -> StatusPosted:
    from raibid_gitops.clients.gitea import cut

    state, description = describe(report)
    # Gitea keeps 255 characters; the list view shows far fewer, so the count comes first.
    description = cut(description, 240)
    client.create_status(ref, sha, state=state, context=CONTEXT, description=description, target_url=target_url)
    return StatusPosted(repo=ref.full_name, sha=sha, state=state, description=description)


def report_commit_status(root: Path, report: Report, *, sha: str | None = None, url: str | None = None) -> StatusPosted:
    """Post ``report`` as status ``raibid/verify`` on HEAD of ``root`` (or ``sha``).

    HEAD must have been pushed: a status is attached to a commit Gitea has, which is how it
    shows up on every pull request whose head that commit is (including one edited by hand
    in Gitea's web editor and then checked out here).
    """
    from raibid_gitops.clients.git import Repo

    sha = sha or Repo(root).head()
    ref = resolve_target(root, url=url)
    with client_for(ref) as client:
        return post_status(client, ref, sha, report)


def verify_pull(ref: RepoRef, number: int) -> tuple[Report, StatusPosted]:
    """Verify pull request ``number`` as Gitea has it now and post ``raibid/verify`` on its head.

    The head is fetched by Gitea's ``refs/pull/N/head`` into a temporary repository, so this
    works for any PR (a branch of a fork, an edit made in the web editor) without touching a
    local clone.
    """
    import shutil
    import tempfile

    from raibid_gitops.clients.git import Repo, auth_from_env, credential_token
    from raibid_gitops.gitops.verify import verify

    with client_for(ref) as client:
        pull = client.get_pull(ref, number)
        head = str(pull["head"]["sha"])
        tmp = Path(tempfile.mkdtemp(prefix="raibid-pr-verify-"))
        try:
            repo = Repo.init(tmp / "pr")
            repo.auth = auth_from_env() or credential_token(ref.clone_url)
            repo.add_remote(ref.clone_url)
            # Depth 1: verify needs the tree, not the history.
            repo.git("fetch", "--quiet", "--depth", "1", "origin", f"refs/pull/{int(number)}/head", auth=True)
            repo.git("checkout", "--quiet", "--detach", "FETCH_HEAD")
            fetched = repo.head()
            if fetched != head:
                raise GiteaError(f"#{number} moved while it was fetched ({head[:12]} -> {fetched[:12]})",
                                 hint="run it again")
            report = verify(repo.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        posted = post_status(client, ref, head, report)
    return report, posted
