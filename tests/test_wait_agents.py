"""`sync --wait-agents`' last stage against a real redis-server: which agents count as on the
new settings, and which refusal is blamed on the synced commit.

Each call runs one round (its deadline has passed already), so the outcome depends only on the
heartbeats written beforehand, not on timing. The whole flow with real agents and Flux is in
test_sync_stack.py (TestWaitAgents).
"""

from __future__ import annotations

import time

import pytest

from raibid_gitops import contract as c
from raibid_gitops.errors import SyncFailed, SyncTimeout
from raibid_gitops.gitops.reporting import Silent
from raibid_gitops.gitops.sync import SettingsAt, wait_agents
from raibid_gitops.settings import text_digest

pytestmark = pytest.mark.redis

COMMIT = "c0ffee" + "0" * 34
NEW_TEXT = "agents:\n  maxReplicas: 6\n"
OLD_BAD_TEXT = "agents:\n  maxReplicas: -1\n"
NEW = SettingsAt(COMMIT, text_digest(NEW_TEXT), "sha256:new")
INVALID = SettingsAt(COMMIT, text_digest(NEW_TEXT), None, "agents.maxReplicas: must be >= 0")


def heartbeat(client, agent: str, **fields: str) -> None:
    key = c.agent_key(agent)
    client.hset(key, mapping={c.AGENT_STATE: c.AGENT_STATE_IDLE, **fields})
    client.expire(key, 60)


def one_round(client, want: SettingsAt):
    return wait_agents(client, want, time.monotonic(), Silent(), "0s")


class TestWaitAgents:
    def test_all_on_the_new_hash(self, redis_client):
        heartbeat(redis_client, "a1", **{c.AGENT_SETTINGS_HASH: "sha256:new"})
        heartbeat(redis_client, "a2", **{c.AGENT_SETTINGS_HASH: "sha256:new"})
        heartbeat(redis_client, "gone", **{c.AGENT_STATE: c.AGENT_STATE_DRAINING, c.AGENT_SETTINGS_HASH: "sha256:old"})
        out = one_round(redis_client, NEW)
        assert out.agents == {"a1": "sha256:new", "a2": "sha256:new"}

    def test_refusal_of_this_version_names_the_agent_and_its_reason(self, redis_client):
        heartbeat(redis_client, "a1", **{c.AGENT_SETTINGS_HASH: "sha256:new"})
        heartbeat(redis_client, "a2", **{c.AGENT_SETTINGS_HASH: "sha256:old",
                                         c.AGENT_SETTINGS_ERROR: "queue.claimIdleSeconds: too small",
                                         c.AGENT_SETTINGS_REFUSED: NEW.digest})
        with pytest.raises(SyncFailed) as exc:
            one_round(redis_client, NEW)
        assert exc.value.message == ("agent a2 refused the settings of c0ffee000000 and keeps sha256:old: "
                                     "queue.claimIdleSeconds: too small")

    def test_an_older_refusal_is_not_blamed_on_this_commit(self, redis_client):
        """An agent still reporting its refusal of an earlier version is behind, not refusing."""
        heartbeat(redis_client, "a1", **{c.AGENT_SETTINGS_HASH: "sha256:old",
                                         c.AGENT_SETTINGS_ERROR: "agents.maxReplicas: must be >= 0",
                                         c.AGENT_SETTINGS_REFUSED: text_digest(OLD_BAD_TEXT)})
        with pytest.raises(SyncTimeout, match=r"still on other settings: a1 \(sha256:old\)"):
            one_round(redis_client, NEW)

    def test_invalid_settings_wait_for_the_refusal(self, redis_client):
        heartbeat(redis_client, "a1", **{c.AGENT_SETTINGS_HASH: "sha256:old"})
        with pytest.raises(SyncTimeout, match="do not validate: agents.maxReplicas: must be >= 0"):
            one_round(redis_client, INVALID)
        heartbeat(redis_client, "a1", **{c.AGENT_SETTINGS_HASH: "sha256:old", c.AGENT_SETTINGS_ERROR: "bad",
                                         c.AGENT_SETTINGS_REFUSED: INVALID.digest})
        with pytest.raises(SyncFailed, match="agent a1 refused the settings of c0ffee000000 and keeps sha256:old: bad"):
            one_round(redis_client, INVALID)

    def test_invalid_settings_and_no_agent(self, redis_client):
        with pytest.raises(SyncFailed, match="the settings at c0ffee000000 do not validate: agents.maxReplicas"):
            one_round(redis_client, INVALID)

    def test_no_agent_running(self, redis_client):
        out = one_round(redis_client, NEW)
        assert out.agents == {} and "no agent is running" in (out.note or "")


def test_text_digest_ignores_what_git_and_a_mounted_file_differ_in():
    assert text_digest("a: 1\n") == text_digest("a: 1") == text_digest("a: 1\r\n\n")
    assert text_digest("a: 1\n") != text_digest("a: 2\n")
