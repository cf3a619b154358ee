"""The Agents tab: id, state, current job, settings hash (stale ones stand out), heartbeat."""

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


def cells(a: AgentRow, now) -> tuple[object, ...]:
    h = fmt.short_hash(a.settings_hash)
    return (a.id, Text(a.state or "-", style=STATE_STYLE.get(a.state, "")), a.job or "-",
            Text(f"⚠ {h} stale", style="bold red") if a.stale else Text(h),
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
                           ("hash", "SETTINGS HASH"), ("beat", "LAST HEARTBEAT")):
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
        expected = fmt.short_hash(self.app.expected_hash or "")
        self.query_one("#agents-summary", Static).update(
            f"{len(agents)} agent(s); live settings {expected}"
            + (f"; [b red]{stale} on old settings[/]" if stale else ""))
