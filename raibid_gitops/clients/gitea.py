"""The Gitea API (v1) through one ``requests.Session``: timeouts on every call, bounded retries
with backoff, our own exceptions, and the token never in a log line, an exception or a repr.

Retries: a refused/reset connection, a 5xx and a 429 are retried a bounded number of times
with exponential backoff (``Retry-After`` honoured, capped). A read timeout is retried only
for idempotent methods: a POST that timed out may have been applied (a second PR, a second
review), so it is reported instead. Everything else maps to one exception class per status
in :func:`_raise_for`, with the server's message cut short.
"""

from __future__ import annotations

import base64
import logging
import random
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import quote, urlsplit

from raibid_gitops.errors import GiteaConflict, GiteaError, GiteaNotFound

log = logging.getLogger(__name__)

#: (connect, read) seconds. Gitea answers API calls in milliseconds; a merge or a diff of a
#: big PR can take a few seconds on a busy 2-core box, so the read budget is generous.
DEFAULT_TIMEOUT = (5.0, 30.0)
#: Attempts per request (1 + retries). Three retries with 0.5 s doubling backoff ride out a
#: Gitea restart of a few seconds without making a dead server take long to report.
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF = 0.5
#: Cap on any single wait, including a server's Retry-After: a CLI must not hang for minutes.
MAX_BACKOFF = 10.0
#: Error bodies are cut to this many characters (a Gitea 500 can return a whole HTML page).
MAX_MESSAGE = 300

_RETRY_STATUS = {429, 500, 502, 503, 504}
_IDEMPOTENT = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
#: Merge styles Gitea's merge endpoint takes as "Do".
MERGE_STYLES = ("merge", "rebase", "rebase-merge", "squash", "fast-forward-only")
STATUS_STATES = ("pending", "success", "error", "failure", "warning")


@dataclass(frozen=True)
class RepoRef:
    """Where a repository lives on Gitea."""

    base_url: str  # http(s)://host[:port][/subpath], no trailing slash
    owner: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def clone_url(self) -> str:
        return f"{self.base_url}/{self.owner}/{self.name}.git"

    @property
    def web_url(self) -> str:
        return f"{self.base_url}/{self.owner}/{self.name}"


def parse_repo_url(url: str) -> RepoRef | None:
    """``http(s)://host[:port][/sub]/owner/repo[.git]`` -> RepoRef; None for ssh/file URLs.

    Credentials in the URL are dropped: they must never travel further than git's own config.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) < 2:
        return None
    owner, name = segments[-2], segments[-1]
    name = name.removesuffix(".git")
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    prefix = "/".join(segments[:-2])
    base = f"{parts.scheme}://{host}" + (f"/{prefix}" if prefix else "")
    return RepoRef(base_url=base, owner=owner, name=name)


def cut(text: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Text from a server with every credential we sent removed: the token, basic-auth parts,
    and anything shaped like an Authorization header or a URL password. A proxy or an error
    page that echoes the request must not bring a header value back to the terminal."""
    from raibid_gitops.clients.git import redact

    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return redact(text)


def _message_of(resp: Any, secrets: Iterable[str] = ()) -> str:
    try:
        data = resp.json()
    except ValueError:
        return cut(scrub(resp.text or resp.reason or "", secrets))
    if isinstance(data, dict):
        msg = data.get("message") or data.get("error") or ""
        errors = data.get("errors")
        if errors:
            msg = f"{msg} ({'; '.join(map(str, errors))})" if msg else "; ".join(map(str, errors))
        return cut(scrub(str(msg), secrets))
    return cut(scrub(str(data), secrets))


def _raise_for(method: str, path: str, resp: Any, secrets: Iterable[str] = ()) -> None:
    """One exception class per status family; the message names the call and Gitea's words."""
    status = resp.status_code
    what = f"Gitea {method} {path} answered {status}"
    msg = _message_of(resp, secrets)
    text = f"{what}: {msg}" if msg else what
    if status == 404:
        raise GiteaNotFound(text, status=status)
    if status in (405, 409):
        # Gitea answers 405 to a merge of a PR that is not mergeable (conflicts, checks).
        raise GiteaConflict(text, status=status)
    if status in (401, 403):
        raise GiteaError(text, status=status,
                         hint="set RAIBID_GITEA_TOKEN (or RAIBID_GITEA_TOKEN_FILE) to a token with repository "
                              "read/write scope for this repository")
    raise GiteaError(text, status=status)


class Gitea:
    """A Gitea server. ``token`` authenticates every call; it is kept out of repr and errors."""

    def __init__(self, url: str, token: str | None = None, *, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 attempts: int = DEFAULT_ATTEMPTS, backoff: float = DEFAULT_BACKOFF,
                 basic_auth: tuple[str, str] | None = None) -> None:
        import requests

        self.url = url.rstrip("/")
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self._session = requests.Session()
        self._session.headers.update({"Accept": "application/json", "User-Agent": "raibid-gitops"})
        # Proxies from the environment would route loopback test servers and in-cluster Gitea
        # through a corporate proxy; the config repository's Gitea is always direct.
        self._session.trust_env = False
        #: Every credential value this client sends, to scrub from what servers send back.
        self._secrets: tuple[str, ...] = ()
        if token:
            self._session.headers["Authorization"] = f"token {token}"
            self._secrets = (token,)
        elif basic_auth:
            self._session.auth = basic_auth
            pair = f"{basic_auth[0]}:{basic_auth[1]}"
            self._secrets = (basic_auth[1], pair, base64.b64encode(pair.encode()).decode())

    def __repr__(self) -> str:
        authed = "Authorization" in self._session.headers or self._session.auth is not None
        return f"Gitea(url={self.url!r}, auth={'***' if authed else None})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _sleep_for(self, attempt: int, resp: Any | None) -> float:
        delay = self.backoff * (2 ** attempt)
        if resp is not None:
            retry_after = resp.headers.get("Retry-After", "")
            if retry_after.strip().isdigit():
                delay = float(retry_after)
        # Jitter keeps concurrent clients that failed together from retrying together.
        return min(MAX_BACKOFF, delay) * random.uniform(0.8, 1.2)

    def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                expect: Iterable[int] = (200, 201, 204), raw: bool = False) -> Any:
        """Call ``/api/v1{path}``; decoded JSON (or text with ``raw``), None for an empty body."""
        import requests

        method = method.upper()
        url = f"{self.url}/api/v1{path}"
        expect = tuple(expect)
        last_error = ""
        for attempt in range(self.attempts):
            resp = None
            try:
                resp = self._session.request(method, url, json=json, params=params, timeout=self.timeout)
            except requests.exceptions.ConnectionError as exc:
                # ConnectTimeout is a ConnectionError too: nothing was sent, always safe to retry.
                last_error = f"cannot reach Gitea at {self.url}: {cut(_exc_reason(exc), 160)}"
            except requests.exceptions.Timeout:
                last_error = f"Gitea {method} {path} did not answer within {self.timeout[1]:g}s"
                if method not in _IDEMPOTENT:
                    raise GiteaError(last_error + " (not retried: it may have been applied; "
                                                  "check before retrying)") from None
            except requests.exceptions.RequestException as exc:
                raise GiteaError(f"Gitea {method} {path} failed: {cut(_exc_reason(exc), 160)}") from exc
            else:
                if resp.status_code in expect:
                    if raw:
                        return resp.text
                    if not resp.content.strip():
                        return None
                    try:
                        return resp.json()
                    except ValueError as exc:
                        raise GiteaError(f"Gitea {method} {path} answered {resp.status_code} with a body that "
                                         f"is not JSON: {cut(scrub(resp.text, self._secrets), 120)}",
                                         status=resp.status_code) from exc
                if resp.status_code not in _RETRY_STATUS:
                    _raise_for(method, path, resp, self._secrets)
                last_error = f"Gitea {method} {path} answered {resp.status_code}: {_message_of(resp, self._secrets)}"
            if attempt + 1 < self.attempts:
                delay = self._sleep_for(attempt, resp)
                log.debug("%s; retrying in %.2fs (attempt %d/%d)", last_error, delay, attempt + 2, self.attempts)
                time.sleep(delay)
        status = resp.status_code if resp is not None else None
        raise GiteaError(f"{last_error} (gave up after {self.attempts} attempts)", status=status,
                         hint=None if status else "check the Gitea URL (remote origin, or RAIBID_GITEA_URL) "
                                                  "and that Gitea is running")

    def _repo(self, repo: RepoRef | str) -> str:
        full = repo.full_name if isinstance(repo, RepoRef) else repo
        owner, _, name = full.partition("/")
        return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"

    # -- server, users, repositories --------------------------------------------------------

    def version(self) -> str:
        return str(self.request("GET", "/version")["version"])

    def current_user(self) -> dict[str, Any]:
        return self.request("GET", "/user")

    def create_user(self, username: str, password: str, email: str | None = None) -> dict[str, Any]:
        """Admin only (tests: a second reviewer, since Gitea forbids approving one's own PR)."""
        return self.request("POST", "/admin/users", json={
            "username": username, "password": password, "email": email or f"{username}@example.invalid",
            "must_change_password": False,
        })

    def create_token(self, username: str, name: str, scopes: Iterable[str] = ("all",)) -> str:
        """Create an access token; this call needs basic auth as ``username``."""
        return str(self.request("POST", f"/users/{quote(username, safe='')}/tokens",
                                json={"name": name, "scopes": list(scopes)})["sha1"])

    def add_collaborator(self, repo: RepoRef | str, username: str, permission: str = "write") -> None:
        self.request("PUT", f"{self._repo(repo)}/collaborators/{quote(username, safe='')}",
                     json={"permission": permission})

    def get_repo(self, repo: RepoRef | str) -> dict[str, Any]:
        return self.request("GET", self._repo(repo))

    def create_org_repo(self, org: str, name: str, *, private: bool = True,
                        default_branch: str = "main") -> dict[str, Any]:
        return self.request("POST", f"/orgs/{quote(org, safe='')}/repos",
                            json={"name": name, "private": private, "auto_init": False,
                                  "default_branch": default_branch})

    def delete_repo(self, repo: RepoRef | str) -> None:
        self.request("DELETE", self._repo(repo), expect=(204, 404))

    # -- branches ----------------------------------------------------------------------------

    def get_branch(self, repo: RepoRef | str, branch: str) -> dict[str, Any]:
        return self.request("GET", f"{self._repo(repo)}/branches/{quote(branch, safe='')}")

    def branch_head(self, repo: RepoRef | str, branch: str) -> str:
        return str(self.get_branch(repo, branch)["commit"]["id"])

    def create_branch(self, repo: RepoRef | str, name: str, from_ref: str) -> dict[str, Any]:
        return self.request("POST", f"{self._repo(repo)}/branches",
                            json={"new_branch_name": name, "old_ref_name": from_ref})

    def delete_branch(self, repo: RepoRef | str, name: str) -> None:
        self.request("DELETE", f"{self._repo(repo)}/branches/{quote(name, safe='')}", expect=(204, 404))

    def protect_branch(self, repo: RepoRef | str, branch: str, **rules: Any) -> dict[str, Any]:
        """Create a branch protection rule, e.g. ``enable_push=False`` (no direct pushes)."""
        body = {"rule_name": branch, "branch_name": branch, **rules}
        return self.request("POST", f"{self._repo(repo)}/branch_protections", json=body)

    def unprotect_branch(self, repo: RepoRef | str, branch: str) -> None:
        self.request("DELETE", f"{self._repo(repo)}/branch_protections/{quote(branch, safe='')}", expect=(204, 404))

    # -- files (the web editor's API; tests use it for hand edits) ---------------------------

    def get_file(self, repo: RepoRef | str, path: str, ref: str | None = None) -> tuple[str, str]:
        """(text, blob sha) of a file at ``ref``."""
        data = self.request("GET", f"{self._repo(repo)}/contents/{quote(path)}", params={"ref": ref} if ref else None)
        return base64.b64decode(data["content"]).decode("utf-8"), str(data["sha"])

    def update_file(self, repo: RepoRef | str, path: str, text: str, *, sha: str, message: str,
                    branch: str | None = None, new_branch: str | None = None) -> str:
        """Commit a new version of one file, as Gitea's web editor does; returns the commit sha."""
        body: dict[str, Any] = {"content": base64.b64encode(text.encode()).decode(), "sha": sha, "message": message}
        if branch:
            body["branch"] = branch
        if new_branch:
            body["new_branch"] = new_branch
        data = self.request("PUT", f"{self._repo(repo)}/contents/{quote(path)}", json=body)
        return str(data["commit"]["sha"])

    # -- pull requests -----------------------------------------------------------------------

    def create_pull(self, repo: RepoRef | str, *, head: str, base: str, title: str, body: str = "",
                    head_pushed_within: float = 0.0) -> dict[str, Any]:
        """Open a pull request from ``head`` into ``base``.

        ``head_pushed_within``: the head branch was pushed just now, so wait up to that many
        seconds for Gitea to know it. Gitea records a pushed branch in its database from a queue
        after ``git push`` has returned, and the pull-request API looks the head branch up there:
        right after a push it can answer 404 for a branch that git already has. A 404 creates
        nothing, so asking again cannot open a second pull request."""
        call = {"head": head, "base": base, "title": title, "body": body}
        deadline = time.monotonic() + max(0.0, head_pushed_within)
        delay = 0.05
        while True:
            try:
                return self.request("POST", f"{self._repo(repo)}/pulls", json=call)
            except GiteaNotFound as exc:
                if time.monotonic() + delay > deadline:
                    if head_pushed_within <= 0:
                        raise
                    raise GiteaNotFound(
                        f"{exc.message} (Gitea had not recorded the pushed branch {head} "
                        f"{head_pushed_within:g} s after the push)", status=404,
                        hint="check that the repository exists and Gitea's queues are running, then retry") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def list_pulls(self, repo: RepoRef | str, state: str = "open", limit: int = 50) -> list[dict[str, Any]]:
        return self.request("GET", f"{self._repo(repo)}/pulls", params={"state": state, "limit": limit}) or []

    def get_pull(self, repo: RepoRef | str, number: int) -> dict[str, Any]:
        try:
            return self.request("GET", f"{self._repo(repo)}/pulls/{int(number)}")
        except GiteaNotFound as exc:
            full = repo.full_name if isinstance(repo, RepoRef) else repo
            raise GiteaNotFound(f"pull request #{number} does not exist in {full}", status=404,
                                hint="`raibid gitops pr list` shows the open ones") from exc

    def pull_diff(self, repo: RepoRef | str, number: int) -> str:
        return str(self.request("GET", f"{self._repo(repo)}/pulls/{int(number)}.diff", raw=True))

    def list_reviews(self, repo: RepoRef | str, number: int) -> list[dict[str, Any]]:
        return self.request("GET", f"{self._repo(repo)}/pulls/{int(number)}/reviews") or []

    def approve_pull(self, repo: RepoRef | str, number: int, body: str = "") -> dict[str, Any]:
        try:
            return self.request("POST", f"{self._repo(repo)}/pulls/{int(number)}/reviews",
                                json={"event": "APPROVED", "body": body})
        except GiteaError as exc:
            # Gitea answers 422 "approve your own pull is not allowed" when the token's user
            # opened the pull request, which is the case for every `set --pr` made with the
            # same token: say what it means instead of passing on Gitea's words.
            if exc.status == 422 and "own pull" in exc.message:
                full = repo.full_name if isinstance(repo, RepoRef) else repo
                raise GiteaConflict(
                    f"Gitea does not let the author of pull request #{number} in {full} approve it, and the "
                    "token's user opened it: an approval needs a second Gitea user",
                    status=422,
                    hint="approve as another user with write access (their token in RAIBID_GITEA_TOKEN), or "
                         "merge without an approval if the branch protection does not require one",
                ) from None
            raise

    def close_pull(self, repo: RepoRef | str, number: int) -> dict[str, Any]:
        """Close without merging (Gitea: PATCH state=closed)."""
        return self.request("PATCH", f"{self._repo(repo)}/pulls/{int(number)}", json={"state": "closed"})

    def merge_pull(self, repo: RepoRef | str, number: int, *, style: str = "merge", message: str | None = None,
                   delete_branch: bool = False, head_sha: str | None = None) -> None:
        """Merge; ``head_sha`` makes Gitea refuse if the PR moved since it was checked."""
        if style not in MERGE_STYLES:
            raise GiteaError(f"unknown merge style {style!r}; use one of {', '.join(MERGE_STYLES)}")
        body: dict[str, Any] = {"Do": style, "delete_branch_after_merge": delete_branch}
        if message:
            body["MergeMessageField"] = message
        if head_sha:
            body["head_commit_id"] = head_sha
        self.request("POST", f"{self._repo(repo)}/pulls/{int(number)}/merge", json=body)

    # -- commit statuses ---------------------------------------------------------------------

    def create_status(self, repo: RepoRef | str, sha: str, *, state: str, context: str,
                      description: str = "", target_url: str | None = None) -> dict[str, Any]:
        if state not in STATUS_STATES:
            raise GiteaError(f"unknown commit status state {state!r}; use one of {', '.join(STATUS_STATES)}")
        body = {"state": state, "context": context, "description": cut(description, 250)}
        if target_url:
            body["target_url"] = target_url
        return self.request("POST", f"{self._repo(repo)}/statuses/{quote(sha, safe='')}", json=body)

    def statuses(self, repo: RepoRef | str, ref: str) -> list[dict[str, Any]]:
        """The latest status per context on ``ref`` (Gitea's combined status)."""
        data = self.request("GET", f"{self._repo(repo)}/commits/{quote(ref, safe='')}/status")
        return list((data or {}).get("statuses") or [])

    def status_of(self, repo: RepoRef | str, ref: str, context: str) -> dict[str, Any] | None:
        for st in self.statuses(repo, ref):
            if st.get("context") == context:
                return st
        return None


    # -- bootstrap: organisations, users, teams, repository hooks ----------------------------

    def get_or_none(self, path: str) -> Any:
        """GET ``path``; None when Gitea answers 404."""
        from raibid_gitops.errors import GiteaNotFound

        try:
            return self.request("GET", path)
        except GiteaNotFound:
            return None

    def create_org(self, name: str) -> dict[str, Any]:
        return self.request("POST", "/orgs", json={"username": name, "visibility": "private"})

    def set_password(self, username: str, password: str) -> None:
        """Admin only: a new password for ``username`` (bootstrap re-issues a bot's tokens)."""
        self.request("PATCH", f"/admin/users/{quote(username, safe='')}",
                     json={"login_name": username, "source_id": 0, "password": password,
                           "must_change_password": False})

    def org_teams(self, org: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/orgs/{quote(org, safe='')}/teams") or [])

    def create_team(self, org: str, name: str, *, permission: str, description: str = "") -> dict[str, Any]:
        """A team with ``permission`` (read/write) on every repository of ``org``, present and future."""
        return self.request("POST", f"/orgs/{quote(org, safe='')}/teams", json={
            "name": name, "description": description, "permission": permission,
            "includes_all_repositories": True, "units": ["repo.code"],
        })

    def team_members(self, team_id: int) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/teams/{int(team_id)}/members") or [])

    def add_team_member(self, team_id: int, username: str) -> None:
        self.request("PUT", f"/teams/{int(team_id)}/members/{quote(username, safe='')}")

    def collaborator_permission(self, repo: RepoRef | str, username: str) -> str | None:
        data = self.get_or_none(f"{self._repo(repo)}/collaborators/{quote(username, safe='')}/permission")
        return None if data is None else str(data.get("permission") or "")

    def hooks(self, repo: RepoRef | str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"{self._repo(repo)}/hooks") or [])

    def create_hook(self, repo: RepoRef | str, *, url: str, secret: str,
                    events: Iterable[str] = ("push",)) -> dict[str, Any]:
        """A Gitea-type repository webhook posting JSON to ``url``, signed with ``secret``."""
        return self.request("POST", f"{self._repo(repo)}/hooks", json={
            "type": "gitea", "active": True, "events": list(events),
            "config": {"url": url, "content_type": "json", "secret": secret},
        })

    def edit_hook(self, repo: RepoRef | str, hook_id: int, *, url: str, secret: str,
                  events: Iterable[str] = ("push",)) -> dict[str, Any]:
        return self.request("PATCH", f"{self._repo(repo)}/hooks/{int(hook_id)}", json={
            "active": True, "events": list(events),
            "config": {"url": url, "content_type": "json", "secret": secret},
        })


def _exc_reason(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, without the retry wrapper noise."""
    text = str(exc)
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)|(Connection refused|Connection reset by peer|timed out)", text)
    if m:
        return m.group(1) or m.group(2)
    return text
