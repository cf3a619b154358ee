"""Sync's last stage (``--wait-agents``): the settings of the applied commit, and waiting until
every live agent runs them (or one refuses them)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raibid_gitops.errors import ConfigRepoError, GitError, SettingsError, SyncFailed, SyncTimeout
from raibid_gitops.gitops.layout import SETTINGS_PATH
from raibid_gitops.gitops.reporting import Reporter
from raibid_gitops.queue.stats import live_agents

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.clients.git import Repo


@dataclass(frozen=True)
class AgentsOutcome:
    settings_hash: str
    agents: dict[str, str]
    note: str | None = None


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
        raise ConfigRepoError(f"cannot read {SETTINGS_PATH} at {commit[:12]}: {exc.message}") from exc
    try:
        settings = load_text(text, file=f"{commit[:12]}:{SETTINGS_PATH}")
    except SettingsError as exc:
        return SettingsAt(commit, text_digest(text), None, exc.message)
    return SettingsAt(commit, text_digest(text), settings.hash(), redis_url=url_for(settings))


def wait_agents(client: Any, want: SettingsAt, deadline: float, progress: Reporter, timeout_text: str,
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
