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

from raibid_tui.sources.kube import KubeConn, kube_errors

#: The commit-status context `raibid gitops verify` reports on a PR's head commit.
VERIFY_CONTEXT = "raibid/verify"
#: Gitea request timeout (connect, read), seconds.
GITEA_TIMEOUT = (5, 30)
#: Seconds before asking git again for a commit the local clone did not have.
MISSING_RETRY = 60.0
#: Open pull requests shown (one page; a config repo rarely has more).
MAX_PULLS = 50


@dataclass(frozen=True)
class SettingsState:
    """Which settings one place holds, by hash."""

    where: str
    hash: str = ""
    detail: str = ""
    error: str = ""


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
    #: Backends that failed, each "what: message" (shown in the panel's banner).
    errors: tuple[str, ...] = ()

    @property
    def live_hash(self) -> str:
        return next((s.hash for s in self.settings if s.where == "live ConfigMap"), "")


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, RaibidError) else f"{type(exc).__name__}: {exc}"


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

    def head_settings(self) -> tuple[Any, str, str]:
        """(Settings, sha, subject) at the config repo's HEAD."""
        from raibid_gitops.clients.git import Repo
        from raibid_gitops.settings import load_text

        if self.repo_path is None:
            raise ConfigRepoError("no config repository given", hint="pass --repo DIR")
        repo = Repo(self.repo_path)
        sha = repo.head()
        subject = repo.git("log", "-1", "--format=%s", sha).strip()
        settings = load_text(repo.show("HEAD", SETTINGS_PATH), SETTINGS_PATH)
        self._settings = settings
        return settings, sha, subject

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
        from raibid_gitops.settings import load_text

        assert self.kube is not None
        with kube_errors(f"read ConfigMap {namespace}/{contract.SETTINGS_CONFIGMAP}", self.kube.server):
            cm = self.kube.core().read_namespaced_config_map(contract.SETTINGS_CONFIGMAP, namespace,
                                                              _request_timeout=(10, 30))
        text = (cm.data or {}).get(contract.SETTINGS_KEY, "")
        try:
            live = load_text(text, f"ConfigMap {contract.SETTINGS_CONFIGMAP}")
        except RaibidError as exc:
            return SettingsState("live ConfigMap", "", f"resourceVersion {cm.metadata.resource_version}",
                                 f"does not validate: {exc.message}")
        return SettingsState("live ConfigMap", live.hash(), f"{namespace}/{contract.SETTINGS_CONFIGMAP} "
                             f"resourceVersion {cm.metadata.resource_version}")

    def snapshot(self) -> ChangesSnapshot:
        states: list[SettingsState] = []
        errors: list[str] = []
        settings = None
        try:
            settings, sha, subject = self.head_settings()
            states.append(SettingsState("config repo HEAD", settings.hash(), f"{sha[:8]} {subject}"))
        except Exception as exc:  # noqa: BLE001 - shown in the banner
            states.append(SettingsState("config repo HEAD", error=_message(exc)))
            errors.append(f"config repo: {_message(exc)}")
        settings = settings or self.settings()
        if self.kube is not None:
            try:
                states.append(self.live_settings(settings.cluster.namespace))
            except Exception as exc:  # noqa: BLE001
                states.append(SettingsState("live ConfigMap", error=_message(exc)))
                errors.append(f"Kubernetes: {_message(exc)}")
        if self.agents is not None:
            try:
                agents = self.agents.agents()
                counts: dict[str, int] = {}
                for a in agents:
                    counts[a.settings_hash or "?"] = counts.get(a.settings_hash or "?", 0) + 1
                if not counts:
                    states.append(SettingsState("agents", "", "no live agent"))
                for h, n in sorted(counts.items(), key=lambda kv: -kv[1]):
                    states.append(SettingsState("agents", h, f"{n} of {len(agents)} agent(s)"))
            except Exception as exc:  # noqa: BLE001
                states.append(SettingsState("agents", error=_message(exc)))
                errors.append(f"Redis: {_message(exc)}")
        pulls: tuple[PullRow, ...] = ()
        if self.gitea is None:
            errors.append("Gitea: not configured (set RAIBID_GITEA_URL and RAIBID_GITEA_TOKEN)")
        else:
            try:
                pulls = self.gitea.pulls(*self.gitea_repo())
            except Exception as exc:  # noqa: BLE001
                errors.append(f"Gitea: {_message(exc)}")
        return ChangesSnapshot(tuple(states), pulls, tuple(errors))

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

