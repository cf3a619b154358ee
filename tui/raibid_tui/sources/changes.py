"""Pending changes for the TUI: the settings at the config repo's HEAD against the live
ConfigMap against what the agents report (by hash), and the open Gitea pull requests with
their ``raibid/verify`` commit status; a PR's diff; merging a PR.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raibid_gitops import contract
from raibid_gitops.errors import ConfigRepoError, GiteaError, RaibidError
from raibid_gitops.gitops.layout import SETTINGS_PATH
from raibid_tui.sources.kube import KubeConn

#: The commit-status context `raibid gitops verify` reports on a PR's head commit.
VERIFY_CONTEXT = "raibid/verify"
#: Gitea request timeout (connect, read), seconds.
GITEA_TIMEOUT = (5, 30)
#: Seconds before asking git again for a commit the local clone did not have.
MISSING_RETRY = 60.0
#: Open pull requests shown (one page; a config repo rarely has more).
MAX_PULLS = 50


#: The places the Changes tab compares (SettingsState.where).
HEAD, LIVE, AGENTS = "config repo HEAD", "live ConfigMap", "agents"
#: Longest settings or refusal message kept (validation messages list every problem; an
#: agent's heartbeat carries up to 2,000 characters): the screen shows a few lines of it.
MAX_MESSAGE = 600


@dataclass(frozen=True)
class SettingsState:
    """Which settings one place holds: by hash when they validate, by the digest of their text
    (``settings.text_digest``) when they do not, so a refusal can be matched to its version."""

    where: str
    hash: str = ""
    detail: str = ""
    #: The place could not be read (a backend failure; the banner names it).
    error: str = ""
    #: Read, but the settings do not validate: why (bounded).
    invalid: str = ""
    #: ``text_digest`` of the text read (HEAD, live ConfigMap).
    digest: str = ""
    #: Agents: the digest of the version these agents refused ("" when they refused none) and
    #: why; they keep running ``hash``, their last good settings.
    refused: str = ""
    refusal: str = ""


#: Tones of a settings verdict (the widget colours them).
OK, WARN, BAD, NONE = "ok", "warn", "bad", "none"


def judge(state: SettingsState, head: SettingsState | None, live: SettingsState | None) -> tuple[str, str]:
    """The STATE of one place as (label, tone): each state as it is — unreadable, not valid,
    refused by agents — before any comparison, and compared with HEAD only by hash."""
    if state.error:
        return "✘ cannot read", BAD
    if state.invalid:
        return "✘ does not validate", BAD
    if state.refused:
        if live is not None and live.invalid and state.refused == live.digest:
            return "✘ refused the live settings", BAD
        if head is not None and head.invalid and state.refused == head.digest:
            return "✘ refused HEAD's settings", BAD
        return "✘ refused settings", BAD
    if state is head:
        return "✔ valid", OK
    if not state.hash:
        return "-", NONE
    if head is not None and head.hash:
        return ("= HEAD", OK) if state.hash == head.hash else ("⚠ differs from HEAD", WARN)
    if head is not None and head.invalid:
        return "⚠ differs from HEAD", WARN
    return "? HEAD unknown", NONE


def problems(states: tuple[SettingsState, ...]) -> tuple[tuple[str, str], ...]:
    """(what, why) per place whose settings do not validate or were refused: what the tab
    shows in full under the table (the DETAIL column is cut). A place holding the same text
    as one already listed says so instead of repeating the reason."""
    out: list[tuple[str, str]] = []
    # Which places hold each invalid text; agents read the live ConfigMap, so a refusal names it first.
    holders: dict[str, list[str]] = {}
    for s in states:
        if s.invalid and s.digest:
            holders.setdefault(s.digest, []).append(s.where)
    explained: set[str] = set()
    for s in states:
        if s.invalid:
            where = f"{s.where} ({s.detail})" if s.detail else s.where
            if s.digest in explained:
                out.append((f"{where} does not validate: the same settings as {holders[s.digest][0]}", ""))
            else:
                out.append((f"{where} does not validate:", _reason(s.invalid)))
                explained.add(s.digest)
        elif s.refused:
            version = "of an unknown version" if s.refused == "?" else s.refused
            names = holders.get(s.refused, [])
            same = f" (those of the {LIVE})" if LIVE in names else f" (those of {names[0]})" if names else ""
            out.append((f"{s.detail} refused the settings {version}{same} and keep {s.hash or 'none'}:",
                        _reason(s.refusal or "no reason given")))
    return tuple(out)


def _reason(message: str) -> str:
    """A settings message without its "<file> is not valid:" line (the title says it)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith("is not valid:"):
        lines = lines[1:]
    return "\n".join(lines)


def bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters (messages quote settings and heartbeats)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class PullRow:
    number: int
    title: str
    branch: str = ""
    author: str = ""
    head_sha: str = ""
    #: success / failure / error / pending / "" (no verify status yet)
    verify: str = ""
    verify_description: str = ""
    mergeable: bool = True
    url: str = ""
    #: The PR's description; PRs made by `raibid gitops set --pr` carry the rendered-object diff.
    body: str = ""


@dataclass(frozen=True)
class ChangesSnapshot:
    settings: tuple[SettingsState, ...] = ()
    pulls: tuple[PullRow, ...] = ()
    #: Backends that could not be read, each "what: message" (shown in the panel's banner).
    #: Settings that were read but do not validate are not errors: their state says so.
    errors: tuple[str, ...] = ()
    #: Backends not configured (e.g. Gitea without RAIBID_GITEA_URL): said where they would show.
    notes: tuple[str, ...] = ()

    def place(self, where: str) -> SettingsState | None:
        return next((s for s in self.settings if s.where == where), None)

    @property
    def live_hash(self) -> str:
        live = self.place(LIVE)
        return live.hash if live is not None else ""


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, RaibidError) else f"{type(exc).__name__}: {exc}"


def _validated(where: str, text: str, file: str, detail: str) -> tuple[SettingsState, Any]:
    """(state, Settings or None) of settings ``text``: any failure to load it — YAML, schema,
    size bounds — is "does not validate", never a backend failure."""
    from raibid_gitops.settings import load_text, text_digest

    digest = text_digest(text)
    try:
        settings = load_text(text, file)
    except Exception as exc:  # noqa: BLE001 - whatever the text does, it is this place's state
        return SettingsState(where, detail=detail, invalid=bounded(_message(exc)), digest=digest), None
    return SettingsState(where, settings.hash(), detail, digest=digest), settings


def agent_states(agents: Any) -> list[SettingsState]:
    """One state per (settings hash, refused version) the agents report, largest group first."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for a in agents:
        groups.setdefault((a.settings_hash, a.refused), []).append(a)
    if not groups:
        return [SettingsState(AGENTS, "", "no live agent")]
    out = []
    for (h, refused), members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        out.append(SettingsState(AGENTS, h, f"{len(members)} of {len(agents)} agent(s)", refused=refused,
                                 refusal=bounded(next((m.settings_error for m in members if m.settings_error), ""))))
    return out


class GiteaAPI:
    """The pull-request calls of the Changes tab, on :class:`raibid_gitops.clients.gitea.Gitea`
    (one attempt per call: the tab polls again anyway, and a dead Gitea must not stall it)."""

    def __init__(self, url: str, token: str | None) -> None:
        from raibid_gitops.clients.gitea import Gitea

        self.url = url.rstrip("/")
        self.client = Gitea(self.url, token, timeout=GITEA_TIMEOUT, attempts=1)

    def pulls(self, owner: str, repo: str) -> tuple[PullRow, ...]:
        full = f"{owner}/{repo}"
        rows = []
        for pr in self.client.list_pulls(full, state="open", limit=MAX_PULLS):
            sha = (pr.get("head") or {}).get("sha", "")
            mine = self.client.status_of(full, sha, VERIFY_CONTEXT) if sha else None
            verify = str((mine or {}).get("status") or (mine or {}).get("state") or "")
            rows.append(PullRow(number=int(pr["number"]), title=str(pr.get("title", "")),
                                branch=str((pr.get("head") or {}).get("ref", "")),
                                author=str((pr.get("user") or {}).get("login", "")), head_sha=sha,
                                verify=verify, verify_description=str((mine or {}).get("description") or ""),
                                mergeable=bool(pr.get("mergeable", True)), url=str(pr.get("html_url", "")),
                                body=str(pr.get("body") or "")))
        return tuple(sorted(rows, key=lambda r: r.number))

    def diff(self, owner: str, repo: str, number: int) -> str:
        return self.client.pull_diff(f"{owner}/{repo}", number)

    def merge(self, owner: str, repo: str, pr: PullRow) -> None:
        # head_sha: Gitea refuses if the PR moved since the user looked at it.
        self.client.merge_pull(f"{owner}/{repo}", pr.number, delete_branch=True, head_sha=pr.head_sha or None)


class ChangesSource:
    """Settings hashes from the config repo (``repo_path``), the cluster and the agents, and
    Gitea pull requests. Every backend fails on its own: its error is listed, the rest shown."""

    def __init__(self, repo_path: Path | None, kube: KubeConn | None, gitea_url: str | None,
                 gitea_token: str | None, agents: Any = None) -> None:
        self.repo_path = repo_path
        self.kube = kube
        self.gitea = GiteaAPI(gitea_url, gitea_token) if gitea_url else None
        self.agents = agents
        self._settings: Any = None
        #: Commit subjects by SHA: a commit never changes, and a watch delivers the same
        #: revision for hundreds of objects.
        self._subjects: dict[str, str] = {}
        #: SHAs not in the local clone, with when we looked: asked again after MISSING_RETRY.
        self._missing: dict[str, float] = {}

    # -- settings -----------------------------------------------------------------------------

    def _read_head(self) -> tuple[str, str, str]:
        """(sha, subject, settings.yaml text) at the config repo's HEAD."""
        from raibid_gitops.clients.git import Repo

        if self.repo_path is None:
            raise ConfigRepoError("no config repository given", hint="pass --repo DIR")
        repo = Repo(self.repo_path)
        sha = repo.head()
        subject = repo.git("log", "-1", "--format=%s", sha).strip()
        return sha, subject, repo.show(sha, SETTINGS_PATH)

    def head_settings(self) -> tuple[Any, str, str]:
        """(Settings, sha, subject) at the config repo's HEAD."""
        from raibid_gitops.settings import load_text

        sha, subject, text = self._read_head()
        settings = load_text(text, SETTINGS_PATH)
        self._settings = settings
        return settings, sha, subject

    def head_state(self) -> SettingsState:
        """HEAD's settings: unreadable (error), read but not valid (invalid, with the text's
        digest), or valid (hash). Raises nothing."""
        try:
            sha, subject, text = self._read_head()
        except Exception as exc:  # noqa: BLE001 - the state says so; the banner names it
            return SettingsState(HEAD, error=bounded(_message(exc)))
        detail = f"{sha[:8]} {bounded(subject, 72)}"
        state, settings = _validated(HEAD, text, SETTINGS_PATH, detail)
        if settings is not None:
            self._settings = settings
        return state

    def settings(self) -> Any:
        """The settings at HEAD when readable, else the defaults (names for queue and agents)."""
        if self._settings is None:
            try:
                self.head_settings()
            except Exception:  # noqa: BLE001 - fall back to defaults; the Changes tab shows the error
                from raibid_gitops.settings import defaults

                return defaults()
        return self._settings

    def commit_subject(self, sha: str) -> str:
        """Subject of ``sha`` in the config repo, "" when unknown (not fetched, no repo)."""
        if not sha or self.repo_path is None:
            return ""
        if sha in self._subjects:
            return self._subjects[sha]
        if time.monotonic() - self._missing.get(sha, -MISSING_RETRY) < MISSING_RETRY:
            return ""
        try:
            from raibid_gitops.clients.git import Repo

            subject = Repo(self.repo_path).git("log", "-1", "--format=%s", sha).strip()
        except Exception:  # noqa: BLE001 - a missing commit only leaves the subject blank
            self._missing[sha] = time.monotonic()  # a later fetch may bring it
            return ""
        self._subjects[sha] = subject
        return subject

    def gitea_repo(self) -> tuple[str, str]:
        """(owner, name) of the config repo on Gitea: from its ``origin`` remote when that is on
        the Gitea we talk to (a fork or a renamed repo), else from the settings' ``gitea.*``."""
        from raibid_gitops.clients.gitea import parse_repo_url

        if self.repo_path is not None and self.gitea is not None:
            try:
                from raibid_gitops.clients.git import Repo

                ref = parse_repo_url(Repo(self.repo_path).remote_url("origin") or "")
            except Exception:  # noqa: BLE001 - no usable remote: use the settings
                ref = None
            if ref is not None and ref.base_url.rstrip("/") == self.gitea.url:
                return ref.owner, ref.name
        s = self.settings()
        return s.gitea.owner, s.gitea.repo

    def live_settings(self, namespace: str) -> SettingsState:
        """The live ConfigMap's settings; raises KubeError when it cannot be read."""
        from raibid_gitops.clients.kube import ObjectRef

        assert self.kube is not None
        cm = self.kube.kube().get(ObjectRef("v1", "ConfigMap", contract.SETTINGS_CONFIGMAP, namespace))
        text = (cm.get("data") or {}).get(contract.SETTINGS_KEY, "")
        rv = (cm.get("metadata") or {}).get("resourceVersion", "")
        detail = f"{namespace}/{contract.SETTINGS_CONFIGMAP} resourceVersion {rv}"
        return _validated(LIVE, text, f"ConfigMap {contract.SETTINGS_CONFIGMAP}", detail)[0]

    def snapshot(self) -> ChangesSnapshot:
        """Every place read afresh: nothing of an earlier snapshot is kept, so a state that was
        wrong is right again on the next refresh after it was fixed."""
        states: list[SettingsState] = []
        errors: list[str] = []
        notes: list[str] = []
        head = self.head_state()
        states.append(head)
        if head.error:
            errors.append(f"config repo: {head.error}")
        settings = self.settings()
        if self.kube is not None:
            try:
                states.append(self.live_settings(settings.cluster.namespace))
            except Exception as exc:  # noqa: BLE001
                states.append(SettingsState(LIVE, error=bounded(_message(exc))))
                errors.append(f"Kubernetes: {bounded(_message(exc))}")
        if self.agents is not None:
            try:
                states.extend(agent_states(self.agents.agents()))
            except Exception as exc:  # noqa: BLE001
                states.append(SettingsState(AGENTS, error=bounded(_message(exc))))
                errors.append(f"Redis: {bounded(_message(exc))}")
        pulls: tuple[PullRow, ...] = ()
        if self.gitea is None:
            notes.append("Gitea not configured (set RAIBID_GITEA_URL and RAIBID_GITEA_TOKEN)")
        else:
            try:
                pulls = self.gitea.pulls(*self.gitea_repo())
            except Exception as exc:  # noqa: BLE001
                errors.append(f"Gitea: {bounded(_message(exc))}")
        return ChangesSnapshot(tuple(states), pulls, tuple(errors), tuple(notes))

    def diff(self, pr: PullRow) -> str:
        """What the diff view shows: the PR's description (for PRs made by `raibid gitops set
        --pr`, the rendered-object diff) and the Git diff from Gitea."""
        if self.gitea is None:
            raise GiteaError("Gitea is not configured", hint="set RAIBID_GITEA_URL and RAIBID_GITEA_TOKEN")
        return self.gitea.diff(*self.gitea_repo(), pr.number)

    def merge(self, pr: PullRow) -> None:
        if self.gitea is None:
            raise GiteaError("Gitea is not configured", hint="set RAIBID_GITEA_URL and RAIBID_GITEA_TOKEN")
        self.gitea.merge(*self.gitea_repo(), pr)

