"""git through the ``git`` binary, with our errors and no credential ever in a URL or a message.

Each call is one ``git`` process: GitPython gave us nothing more than that, and importing it
cost more than the few git commands of a `raibid gitops set` (issue 14). Output is read as git's
plain English (``LC_ALL=C``), as the push parsing below expects.

Authentication to Gitea uses an ``http.extraHeader`` passed per command (``-c``), so the
token is never stored in ``.git/config`` and never appears in a remote URL that git or we
might print. ``GIT_TERMINAL_PROMPT=0``: a missing credential fails instead of hanging.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class _Result:
    status: int
    stdout: str
    stderr: str


def _run(args: list[str], cwd: Path | None = None, timeout: float | None = None,
         input: bytes | None = None, strip: bool = True) -> _Result:
    """Run ``git ARGS`` in ``cwd``: status, stdout without its final newline (``strip``), stderr
    likewise.

    The environment is ours plus :func:`_env` and git's plain English (``LANGUAGE``/``LC_ALL``
    C), which is what the parsing of push results and errors reads."""
    env = {**os.environ, "LANGUAGE": "C", "LC_ALL": "C", **_env()}
    try:
        # Bytes in and out (no text=): stdout is decoded below, keeping undecodable bytes.
        proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, timeout=timeout, check=False,
                              input=input, stdin=subprocess.DEVNULL if input is None else None)
    except FileNotFoundError:
        raise GitError("git is not installed (no `git` on PATH)", hint="install git") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0] if args else ''} did not finish within {timeout:.0f}s") from None
    out = proc.stdout.decode("utf-8", "surrogateescape")
    err = proc.stderr.decode("utf-8", "replace")
    if strip and out.endswith("\n"):
        out = out[:-1]
    return _Result(proc.returncode, out, err[:-1] if err.endswith("\n") else err)


def _failure(what: str, args: list[str], res: _Result) -> GitError:
    """The GitError for a failed command: git's own words (stderr, else stdout), credentials
    removed; for a command that failed silently, its exit code and command line."""
    if res.stderr.strip():
        detail = res.stderr
    elif res.stdout.strip():
        detail = f"stdout: '{res.stdout}"
    else:
        detail = f"Cmd('git') failed due to: exit code({res.status})\n  cmdline: {' '.join(['git', *args])}"
    detail = redact(detail.strip())
    return GitError(f"{what} failed: {detail.strip(chr(39)).strip()}")


def _is_repository(path: Path) -> bool:
    """A working tree's top level (``.git`` directory or file) or a bare repository."""
    if (path / ".git").exists():
        return True
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


#: A commit id as .git/HEAD holds it when detached (SHA-1, or SHA-256 in a repository made so).
_OBJECT_ID = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


@dataclass(frozen=True)
class WorkingState:
    """A working tree as `git status --porcelain=v2 --branch -z` describes it."""

    #: The checked-out branch, or "HEAD" when detached (as `rev-parse --abbrev-ref HEAD`).
    branch: str
    #: The commit checked out; None before the first commit.
    head: str | None
    #: Paths with changes, staged or not, and untracked ones.
    changed: tuple[str, ...]

    @classmethod
    def parse(cls, out: str) -> WorkingState:
        branch, head, changed = "HEAD", None, []
        records = iter(out.split("\0"))
        for rec in records:
            if rec.startswith("# branch.head "):
                name = rec[len("# branch.head "):]
                branch = "HEAD" if name == "(detached)" else name
            elif rec.startswith("# branch.oid "):
                oid = rec[len("# branch.oid "):]
                head = None if oid == "(initial)" else oid
            elif rec.startswith("1 "):
                changed.append(rec.split(" ", 8)[8])
            elif rec.startswith("2 "):
                changed.append(rec.split(" ", 9)[9])
                next(records, None)  # the path it was renamed or copied from
            elif rec.startswith("u "):
                changed.append(rec.split(" ", 10)[10])
            elif rec.startswith(("? ", "! ")):
                changed.append(rec[2:])
        return cls(branch, head, tuple(changed))


class Repo:
    """A local clone of the config repository."""

    def __init__(self, path: Path, auth: Auth | None = None):
        self.path = Path(path)
        self.auth = auth
        if not self.path.is_dir() or not _is_repository(self.path):
            raise GitError(f"{self.path} is not a git repository",
                           hint="run `raibid gitops init DIR`, or clone the config repository")

    # -- creation ----------------------------------------------------------------------------

    @classmethod
    def init(cls, path: Path, branch: str = "main") -> Repo:
        Path(path).mkdir(parents=True, exist_ok=True)
        args = ["init", "--quiet", f"--initial-branch={branch}", str(path)]
        res = _run(args)
        if res.status != 0:
            raise _failure(f"git init {path}", args, res)
        return cls(path)

    @classmethod
    def clone(cls, url: str, path: Path, auth: Auth | None = None, branch: str | None = None) -> Repo:
        args = [*(auth.config_args() if auth else []), "clone", "--quiet"]
        if branch:
            args += ["--branch", branch]
        args += [url, str(path)]
        res = _run(args)
        if res.status != 0:
            raise _failure(f"git clone {redact(url)}", args, res)
        return cls(path, auth)

    # -- plumbing ----------------------------------------------------------------------------

    def git(self, *args: str, auth: bool = False) -> str:
        pre = self.auth.config_args() if (auth and self.auth) else []
        res = _run([*pre, *args], cwd=self.path)
        if res.status != 0:
            raise _failure(f"git {args[0]}", [*pre, *args], res)
        return res.stdout

    def git_bytes(self, *args: str) -> bytes:
        """Like :meth:`git`, for output that is not text (``git archive``)."""
        proc = subprocess.run(["git", *args], cwd=self.path, env={**os.environ, **_env()}, capture_output=True,
                              timeout=120, check=False)
        if proc.returncode != 0:
            raise GitError(f"git {args[0]} failed: {redact(proc.stderr.decode(errors='replace').strip())[-500:]}")
        return proc.stdout

    def head(self) -> str:
        """The commit checked out. When HEAD is detached, ``.git/HEAD`` holds that commit's id and
        git itself reads it from there: one process fewer for set, which commits detached.
        Anything else (a branch, a linked worktree, no commit yet) is asked of git."""
        try:
            text = (self.path / ".git" / "HEAD").read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            text = ""
        if _OBJECT_ID.fullmatch(text):
            return text
        return self.git("rev-parse", "HEAD").strip()

    def branch(self) -> str:
        return self.git("rev-parse", "--abbrev-ref", "HEAD").strip()

    def is_dirty(self) -> bool:
        return bool(self.git("status", "--porcelain", "--untracked-files=normal").strip())

    def state(self) -> WorkingState:
        """Branch, HEAD and the changed paths in one `git status` (what `rev-parse HEAD`,
        `rev-parse --abbrev-ref HEAD` and `status --porcelain` tell in three)."""
        return WorkingState.parse(self.git("status", "--porcelain=v2", "--branch", "-z",
                                           "--untracked-files=normal"))

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
        """The file at ``rev`` as committed, byte for byte (its final newline included)."""
        args = ["show", f"{rev}:{path}"]
        res = _run(args, cwd=self.path, strip=False)
        if res.status != 0:
            raise _failure("git show", args, res)
        return res.stdout

    def commit_all(self, message: str, author: tuple[str, str] | None = None, paths: list[str] | None = None) -> str:
        name, email = author or author_from_config(self) or DEFAULT_AUTHOR
        self.git("add", "--all", *(["--", *paths] if paths else []))
        # The message on stdin: a file would be one more thing to clean up on failure.
        args = ["-c", f"user.name={name}", "-c", f"user.email={email}", "commit", "--quiet", "--no-verify",
                "--cleanup=verbatim", "-F", "-"]
        res = _run(args, cwd=self.path, input=message.encode("utf-8", "surrogateescape"))
        if res.status != 0:
            raise _failure("git commit", args, res)
        return self.head()

    def fetch(self, remote: str = "origin", ref: str | None = None) -> None:
        self.git("fetch", "--quiet", remote, *([ref] if ref else []), auth=True)

    def push(self, remote: str, refspec: str) -> None:
        """Push and check the result: a rejected ref raises PushRejected (git exits non-zero;
        the porcelain status says which ref was refused and why)."""
        pre = self.auth.config_args() if self.auth else []
        res = _run([*pre, "push", "--porcelain", remote, refspec], cwd=self.path)
        status, stdout, stderr = res.status, res.stdout, res.stderr
        text = redact(f"{stdout}\n{stderr}")
        rejected = [ln for ln in text.splitlines() if ln.startswith("!")]
        if status != 0 and not rejected and _UNREACHABLE.search(text):
            # Not a refusal: the remote was never asked. Callers must not read it as "moved".
            detail = _UNREACHABLE.search(text).group(0)  # type: ignore[union-attr]
            raise GitError(f"push of {refspec} to {remote} failed: cannot reach the remote "
                           f"({detail.strip().rstrip(chr(39))})",
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
    # Both in one call (the last value of each wins, as with `git config user.name`).
    res = _run(["config", "-z", "--get-regexp", r"^user\.(name|email)$"], cwd=repo.path)
    if res.status != 0:
        return None
    found: dict[str, str] = {}
    for entry in res.stdout.split("\0"):
        key, _, value = entry.partition("\n")
        found[key.lower()] = value
    if "user.name" not in found or "user.email" not in found:
        return None
    return found["user.name"].strip(), found["user.email"].strip()


# --- used by `raibid gitops set` (working detached on a base, restoring on failure) ---------


def rev_parse(repo: Repo, rev: str) -> str | None:
    """The commit ``rev`` names, or None if it names nothing."""
    try:
        return repo.git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip() or None
    except GitError:
        return None


def is_ancestor(repo: Repo, ancestor: str, descendant: str) -> bool:
    res = _run(["merge-base", "--is-ancestor", ancestor, descendant], cwd=repo.path)
    if res.status == 0:
        return True
    if res.status == 1:  # the documented "no" answer; anything else is a real failure
        return False
    raise GitError(f"git merge-base {ancestor[:12]} {descendant[:12]} failed: {redact(res.stderr.strip())}")


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
