"""The Agents tab: the pool KEDA runs (agent Jobs against maxReplicas, KEDA's verdict) above
the agents' heartbeats: id, state, current job, settings hash (stale ones stand out), heartbeat."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static

from raibid_tui.sources.agents import AgentRow
from raibid_tui.widgets import formatting as fmt
from raibid_tui.widgets.banner import Banner
from raibid_tui.widgets.polling import PollingPanel
from raibid_tui.widgets.table import KeyedTable

STATE_STYLE = {"busy": "yellow", "running": "yellow", "idle": "green", "draining": "magenta"}
#: The refusal's reason beside the refused version (the Changes tab shows more of it).
REFUSAL_WIDTH = 44


def refused_cell(a: AgentRow) -> Text:
    """REFUSED SETTINGS: the version the agent refused (it keeps its SETTINGS HASH) and why."""
    if not a.refused:
        return Text("-", style="dim")
    version = "?" if a.refused == "?" else fmt.short_hash(a.refused)
    reason = fmt.clip(fmt.first_problem(a.settings_error) or "no reason given", REFUSAL_WIDTH)
    return Text(f"✘ {version}: {reason}", style="bold red")


def cells(a: AgentRow, now) -> tuple[object, ...]:
    h = fmt.short_hash(a.settings_hash)
    return (fmt.clip(a.id, 40), Text(a.state or "-", style=STATE_STYLE.get(a.state, "")), fmt.clip(a.job, 40) or "-",
            Text(f"⚠ {h} stale", style="bold red") if a.stale else Text(h), refused_cell(a),
            fmt.age(a.last_heartbeat, now) + " ago" if a.last_heartbeat else "-")


class AgentsPanel(PollingPanel):
    INTERVAL = 3.0
    TITLE_DOWN = "Redis unreachable — agents are not current"

    DEFAULT_CSS = """
    AgentsPanel { height: 1fr; }
    AgentsPanel #agents-summary { padding: 0 1; color: $text-muted; }
    AgentsPanel KeyedTable { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Banner(id="agents-banner")
        yield Static("", id="agents-summary")
        table = KeyedTable(id="agents-table")
        for key, label in (("id", "AGENT"), ("state", "STATE"), ("job", "CURRENT JOB"),
                           ("hash", "SETTINGS HASH"), ("refused", "REFUSED SETTINGS"), ("beat", "LAST HEARTBEAT")):
            table.add_column(label, key=key)
        yield table

    def source(self) -> Any:
        return self.app.sources.agents

    def read(self) -> tuple[AgentRow, ...]:
        return self.source().agents(expected_hash=self.app.expected_hash)

    def show(self, agents: tuple[AgentRow, ...]) -> None:
        now = self.app.now()
        table = self.query_one("#agents-table", KeyedTable)
        ids = {a.id for a in agents}
        for key in set(table.keys()) - ids:
            table.discard(key)
        for a in agents:
            table.upsert(a.id, cells(a, now))
        stale = sum(a.stale for a in agents)
        refused = sum(bool(a.refused) for a in agents)
        expected = fmt.short_hash(self.app.expected_hash or "")
        summary = Text(f"{len(agents)} agent(s); live settings {expected}")
        if stale:
            summary.append(f"; {stale} on old settings", style="bold red")
        if refused:
            summary.append(f"; {refused} refused settings (they keep their last good ones)", style="bold red")
        self.query_one("#agents-summary", Static).update(summary)


POOL_STYLE = {"accepted": "green", "rejected": "bold red", "pending": "yellow"}


def pool_line(p: Any) -> Text:
    """``raibid-ci/raibid-agent  KEDA accepted  3 agent Jobs running of max 5 · 12 done · 0 failed``."""
    line = Text(f"{p.namespace}/{p.name}  ")
    line.append(f"KEDA {p.verdict.state}", style=POOL_STYLE.get(p.verdict.state, ""))
    if p.verdict.reason:
        line.append(f" ({p.verdict.reason})")
    cap = "?" if p.max_replicas is None else str(p.max_replicas)
    line.append(f"  {p.active} agent Job(s) running of max {cap}", style="bold" if p.active else "")
    line.append(f" · {p.succeeded} done · {p.failed} failed")
    if p.verdict.rejected and p.verdict.message:
        line.append(f"\n  {p.verdict.message}", style="red")
    return line


class PoolPanel(PollingPanel):
    """The pool as KEDA runs it, from Kubernetes (a Redis outage does not hide it)."""

    INTERVAL = 3.0
    TITLE_DOWN = "Kubernetes unreachable — the pool is not current"

    DEFAULT_CSS = """
    PoolPanel { height: auto; max-height: 8; }
    PoolPanel #pool-lines { padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield Banner(id="pool-banner")
        yield Static("", id="pool-lines")

    def source(self) -> Any:
        return self.app.sources.pool

    def read(self) -> tuple[Any, ...]:
        return self.source().pools()

    def show(self, pools: tuple[Any, ...]) -> None:
        text = Text("Pool: ", style="bold")
        if not pools:
            text.append("no ScaledJob (is the overlay applied and KEDA installed?)", style="dim")
        for i, p in enumerate(pools):
            if i:
                text.append("\n      ")
            text.append_text(pool_line(p))
        self.query_one("#pool-lines", Static).update(text)
