"""git through GitPython, with our errors and no credential ever in a URL or a message.

Authentication to Gitea uses an ``http.extraHeader`` passed per command (``-c``), so the
token is never stored in ``.git/config`` and never appears in a remote URL that git or we
might print. ``GIT_TERMINAL_PROMPT=0``: a missing credential fails instead of hanging.
"""

from __future__ import annotations

import base64
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from raibid_gitops.errors import GitError, PushRejected

DEFAULT_AUTHOR = ("raibid-gitops", "raibid-gitops@localhost")
#: An Authorization header's value, or the user part of a URL (``user:password@`` and also a
#: bare ``TOKEN@``: tokens are often given as the user name).
_SECRETISH = re.compile(r"(Authorization: (?:token|Basic|Bearer) )\S+|(://)[^/\s@]+@", re.I)


_UNREACHABLE = re.compile(
    r"Could not resolve host[^\n]*|Failed to connect[^\n]*|Connection refused[^\n]*"
    r"|Couldn't connect to server[^\n]*|Operation timed out[^\n]*"
)


def redact(text: str) -> str:
    """Remove credentials from text that came from git (URLs with passwords, auth headers)."""
    return _SECRETISH.sub(lambda m: (m.group(1) or m.group(2)) + "***" + ("@" if m.group(2) else ""), text)


def credentials_in(url: str) -> bool:
    """Whether ``url`` carries credentials: any user part of an http(s) URL (a token is often
    given as the user name), or a password in any other URL. scp-style ``git@host:path`` has
    only a user name, which is not a secret."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
        if parts.scheme in ("http", "https"):
            return bool(parts.username or parts.password)
        return bool(parts.password)
    except ValueError:  # e.g. a malformed port: not a URL we would put credentials in either
        return "@" in url and "://" in url


def refuse_credentials(url: str, what: str) -> None:
    """Refuse a URL with credentials: git would store it in .git/config and print it."""
    if credentials_in(url):
        raise GitError(f"{what} {redact(url)} carries credentials; refusing to store them in .git/config",
                       hint="give the URL without user:password@ and set RAIBID_GITEA_TOKEN (or "
                            "RAIBID_GITEA_TOKEN_FILE): the token then travels only in a header")


#: HTTP status of a failed smart-HTTP exchange, as git and curl report it.
_HTTP_STATUS = re.compile(r"returned error: (\d{3})|RPC failed; HTTP (\d{3})")


def _env() -> dict[str, str]:
    return {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true" if os.name != "nt" else ""}


@dataclass(frozen=True)
class Auth:
    """HTTP credentials for one remote; repr never shows the token."""

    token: str
    username: str = "raibid"

    def __repr__(self) -> str:
        return f"Auth(username={self.username!r}, token=***)"

    def config_args(self) -> list[str]:
        basic = base64.b64encode(f"{self.username}:{self.token}".encode()).decode()
        return ["-c", f"http.extraHeader=Authorization: Basic {basic}"]


def auth_from_env() -> Auth | None:
    token = os.environ.get("RAIBID_GITEA_TOKEN")
    if not token:
        path = os.environ.get("RAIBID_GITEA_TOKEN_FILE")
        if path and Path(path).is_file():
            token = Path(path).read_text().strip()
    if not token:
        return None
    return Auth(token=token, username=os.environ.get("RAIBID_GITEA_USER", "raibid"))


@contextmanager
def _errors(what: str) -> Iterator[None]:
    import git

    try:
        yield
    except git.GitCommandError as exc:
        detail = redact((exc.stderr or exc.stdout or str(exc)).strip())
        detail = re.sub(r"^\s*stderr:\s*", "", detail)
        raise GitError(f"{what} failed: {detail.strip(chr(39)).strip()}") from exc
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise GitError(f"{what} failed: not a git repository") from exc


class Repo:
    """A local clone of the config repository."""

    def __init__(self, path: Path, auth: Auth | None = None):
        import git

        self.path = Path(path)
        self.auth = auth
        try:
            self._repo = git.Repo(self.path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise GitError(f"{self.path} is not a git repository",
                           hint="run `raibid gitops init DIR`, or clone the config repository") from exc

    # -- creation ----------------------------------------------------------------------------

    @classmethod
    def init(cls, path: Path, branch: str = "main") -> "Repo":
        import git

        with _errors(f"git init {path}"):
            git.Repo.init(path, initial_branch=branch)
        return cls(path)

    @classmethod
    def clone(cls, url: str, path: Path, auth: Auth | None = None, branch: str | None = None) -> "Repo":
        import git

        args = [*(auth.config_args() if auth else []), "clone", "--quiet"]
        if branch:
            args += ["--branch", branch]
        with _errors(f"git clone {redact(url)}"):
            git.Git().execute(["git", *args, url, str(path)], env=_env())
        return cls(path, auth)

    # -- plumbing ----------------------------------------------------------------------------

    def git(self, *args: str, auth: bool = False) -> str:
        pre = self.auth.config_args() if (auth and self.auth) else []
        with _errors(f"git {args[0]}"):
            return self._repo.git.execute(["git", *pre, *args], env=_env())

    def git_bytes(self, *args: str) -> bytes:
        """Like :meth:`git`, for output that is not text (``git archive``)."""
        import subprocess

        proc = subprocess.run(["git", *args], cwd=self.path, env={**os.environ, **_env()}, capture_output=True,
                              timeout=120, check=False)
        if proc.returncode != 0:
            raise GitError(f"git {args[0]} failed: {redact(proc.stderr.decode(errors='replace').strip())[-500:]}")
        return proc.stdout

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()

    def branch(self) -> str:
        return self.git("rev-parse", "--abbrev-ref", "HEAD").strip()

    def is_dirty(self) -> bool:
        return bool(self.git("status", "--porcelain", "--untracked-files=normal").strip())

    def status_lines(self) -> list[str]:
        return self.git("status", "--porcelain").splitlines()

    def remote_url(self, name: str = "origin") -> str | None:
        try:
            return self.git("remote", "get-url", name).strip()
        except GitError:
            return None

    def add_remote(self, url: str, name: str = "origin") -> None:
        self.git("remote", "add", name, url)

    def set_upstream(self, branch: str, remote: str = "origin") -> None:
        """``branch`` tracks ``remote``/``branch``, so plain `git pull` and `git push` work."""
        self.git("config", f"branch.{branch}.remote", remote)
        self.git("config", f"branch.{branch}.merge", f"refs/heads/{branch}")

    def use_credential_helper(self, url: str) -> None:
        """Plain git authenticates to ``url``'s host with the token in RAIBID_GITEA_TOKEN (or
        RAIBID_GITEA_TOKEN_FILE) through `raibid gitops credential`: nothing is written to disk
        but the helper's name, and git asks it only for this host."""
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return
        prefix = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/"
        self.git("config", f"credential.{prefix}.helper", "!raibid gitops credential")

    def show(self, rev: str, path: str) -> str:
        return self.git("show", f"{rev}:{path}")

    def commit_all(self, message: str, author: tuple[str, str] | None = None, paths: list[str] | None = None) -> str:
        name, email = author or author_from_config(self) or DEFAULT_AUTHOR
        self.git("add", "--all", *(["--", *paths] if paths else []))
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".msg", delete=False) as fh:
            fh.write(message)
        try:
            with _errors("git commit"):
                self._repo.git.execute(
                    ["git", "-c", f"user.name={name}", "-c", f"user.email={email}", "commit", "--quiet",
                     "--no-verify", "--cleanup=verbatim", "-F", fh.name],
                    env=_env(),
                )
        finally:
            os.unlink(fh.name)
        return self.head()

    def fetch(self, remote: str = "origin", ref: str | None = None) -> None:
        self.git("fetch", "--quiet", remote, *([ref] if ref else []), auth=True)

    def push(self, remote: str, refspec: str) -> None:
        """Push and check the result: a rejected ref raises PushRejected (git exits non-zero,
        and we also read the porcelain status, since GitPython alone does not raise)."""
        pre = self.auth.config_args() if self.auth else []
        import git

        try:
            out = self._repo.git.execute(
                ["git", *pre, "push", "--porcelain", remote, refspec], env=_env(), with_extended_output=True,
            )
            status, stdout, stderr = out
        except git.GitCommandError as exc:
            stdout, stderr = exc.stdout or "", exc.stderr or ""
            status = exc.status
        text = redact(f"{stdout}\n{stderr}")
        rejected = [ln for ln in text.splitlines() if ln.startswith("!")]
        if status != 0 and not rejected and _UNREACHABLE.search(text):
            # Not a refusal: the remote was never asked. Callers must not read it as "moved".
            detail = _UNREACHABLE.search(text).group(0)  # type: ignore[union-attr]
            raise GitError(f"push of {refspec} to {remote} failed: cannot reach the remote ({detail.strip().rstrip(chr(39))})",
                           hint="check that Gitea is running and the remote URL (`git remote -v`)")
        http = _HTTP_STATUS.search(text)
        code = int(http.group(1) or http.group(2)) if http else None
        if status != 0 and not rejected and code is not None and code >= 500:
            # The server failed; it did not refuse us. Nothing was pushed; retrying may work.
            raise GitError(f"push of {refspec} to {remote} failed: the remote answered HTTP {code} (a server "
                           "error); nothing was pushed",
                           hint="retry in a moment; if it persists, look at Gitea's log")
        if status != 0 and not rejected and code in (401, 403):
            raise PushRejected(f"push of {refspec} to {remote} was refused: HTTP {code} (not allowed)",
                               hint="set RAIBID_GITEA_TOKEN to a token that may push to this repository")
        if status != 0 or rejected:
            # "failed to update ref"/"cannot lock ref": another push updated the branch while
            # ours was being received (Gitea under concurrent writers). Same meaning as a
            # non-fast-forward: the branch moved, nothing of ours landed; fetch and retry.
            non_ff = any(w in text for w in ("non-fast-forward", "fetch first", "[rejected]", "stale info",
                                             "failed to update ref", "cannot lock ref", "incorrect old value"))
            detail = " ".join(ln.strip() for ln in (rejected or text.strip().splitlines()[-3:]))
            lowered = text.lower()
            protected = any(w in lowered for w in ("protected", "pre-receive hook declined", "not allowed to push"))
            raise PushRejected(
                f"push of {refspec} to {remote} was refused: {detail.strip()}",
                non_fast_forward=non_ff and not protected,
                hint=("the branch is protected or you may not push to it: propose the change with --pr instead"
                      if protected else None),
            )


def author_from_config(repo: Repo) -> tuple[str, str] | None:
    name = os.environ.get("RAIBID_AUTHOR_NAME")
    email = os.environ.get("RAIBID_AUTHOR_EMAIL")
    if name and email:
        return name, email
    try:
        return repo.git("config", "user.name").strip(), repo.git("config", "user.email").strip()
    except GitError:
        return None


# --- used by `raibid gitops set` (working detached on a base, restoring on failure) ---------


def rev_parse(repo: Repo, rev: str) -> str | None:
    """The commit ``rev`` names, or None if it names nothing."""
    try:
        return repo.git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip() or None
    except GitError:
        return None


def is_ancestor(repo: Repo, ancestor: str, descendant: str) -> bool:
    import git

    try:
        repo._repo.git.execute(["git", "merge-base", "--is-ancestor", ancestor, descendant], env=_env())
        return True
    except git.GitCommandError as exc:
        if exc.status == 1:  # the documented "no" answer; anything else is a real failure
            return False
        raise GitError(f"git merge-base {ancestor[:12]} {descendant[:12]} failed: {redact(str(exc.stderr).strip())}") from exc


def behind(repo: Repo, branch: str, remote: str = "origin") -> int:
    """Commits ``remote``/``branch`` (as last fetched) has that HEAD lacks; 0 when none is known."""
    tracking = rev_parse(repo, f"refs/remotes/{remote}/{branch}")
    if tracking is None:
        return 0
    try:
        return int(repo.git("rev-list", "--count", f"HEAD..{tracking}").strip() or 0)
    except GitError:
        return 0


def fast_forward(repo: Repo, branch: str, remote: str = "origin") -> str | None:
    """Fetch ``branch`` and fast-forward the checked-out branch to it; returns the new head, or
    None when that is not possible (another branch checked out, local commits, a working tree
    in the way). Never merges or rewrites anything."""
    if repo.branch() != branch:
        return None
    new = fetch_branch(repo, remote, branch)
    try:
        repo.git("merge", "--ff-only", "--quiet", f"refs/remotes/{remote}/{branch}")
    except GitError:
        return None
    return new


def fetch_branch(repo: Repo, remote: str, branch: str) -> str:
    """Fetch one branch and return its commit (also updates ``refs/remotes/<remote>/<branch>``)."""
    repo.git("fetch", "--quiet", remote, f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}", auth=True)
    sha = rev_parse(repo, f"refs/remotes/{remote}/{branch}")
    if sha is None:
        raise GitError(f"{remote} has no branch {branch}")
    return sha


def credential_token(url: str) -> Auth | None:
    """Ask git's credential helpers for ``url`` (never prompting): the password is used as
    the Gitea token, as Gitea accepts a token in place of a password."""
    import subprocess
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    query = f"protocol={parts.scheme}\nhost={host}\npath={parts.path.lstrip('/')}\n\n"
    try:
        proc = subprocess.run(["git", "credential", "fill"], input=query, capture_output=True, text=True,
                              check=False, timeout=10, env={**os.environ, **_env()})
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    fields = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if not fields.get("password"):
        return None
    return Auth(token=fields["password"], username=fields.get("username") or "raibid")
