"""Agents for the TUI: every live heartbeat hash ``raibid:agent:{id}`` (it has a TTL, so a dead
agent disappears by itself), with the settings hash it runs compared to the expected one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from raibid_gitops import contract
from raibid_tui.sources.redisconn import RedisConn, redis_errors

#: Heartbeat fields (names from the contract the agent writes with).
_STATE = (contract.AGENT_STATE,)
_JOB = (contract.AGENT_JOB,)
_HASH = (contract.AGENT_SETTINGS_HASH,)
_BEAT = (contract.AGENT_UPDATED_AT,)
#: Longest refusal message kept from a heartbeat (the agent writes up to 2,000 characters).
MAX_REFUSAL = 600


@dataclass(frozen=True)
class AgentRow:
    id: str
    state: str = ""
    job: str = ""
    settings_hash: str = ""
    last_heartbeat: datetime | None = None
    #: Set by the app: the agent runs other settings than the live ConfigMap's.
    stale: bool = False
    #: ``settings.text_digest`` of the settings version the agent refused (it keeps running
    #: ``settings_hash``), and why; "" when it refused none since its last good version.
    refused: str = ""
    settings_error: str = ""


def _first(data: dict[str, str], names: tuple[str, ...]) -> str:
    for n in names:
        if data.get(n):
            return data[n]
    return ""


def parse_time(value: str) -> datetime | None:
    """Epoch seconds (int/float) or ISO 8601."""
    if not value:
        return None
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    except ValueError:
        return None


def row_from_hash(agent_id: str, data: dict[str, str], expected_hash: str | None = None) -> AgentRow:
    h = _first(data, _HASH)
    error = data.get(contract.AGENT_SETTINGS_ERROR) or ""
    refused = data.get(contract.AGENT_SETTINGS_REFUSED) or ""
    if error and not refused:
        refused = "?"  # an agent older than the digest field: it refused something
    return AgentRow(id=agent_id, state=_first(data, _STATE), job=_first(data, _JOB), settings_hash=h,
                    last_heartbeat=parse_time(_first(data, _BEAT)),
                    stale=bool(expected_hash and h and h != expected_hash),
                    refused=refused[:80], settings_error=error[:MAX_REFUSAL])


class AgentsSource:
    def __init__(self, conn: RedisConn) -> None:
        self.conn = conn

    def agents(self, expected_hash: str | None = None) -> tuple[AgentRow, ...]:
        from raibid_gitops.queue.stats import live_agents

        with redis_errors(self.conn, "reading agent heartbeats"):
            found = live_agents(self.conn.client())
        return tuple(row_from_hash(a, d, expected_hash) for a, d in sorted(found.items()))
