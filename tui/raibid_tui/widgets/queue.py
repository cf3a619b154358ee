"""The Queue tab: the job stream's numbers and a throughput sparkline."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Sparkline, Static

from raibid_tui.sources.queue import QueueStats
from raibid_tui.widgets import formatting as fmt
from raibid_tui.widgets.banner import Banner
from raibid_tui.widgets.polling import PollingPanel


def stats_table(s: QueueStats) -> Table:
    t = Table.grid(padding=(0, 3))
    t.add_column(style="bold", justify="right")
    t.add_column()
    t.add_row("stream", f"{s.stream}  (group {s.group})")
    t.add_row("length", str(s.length))
    lag = "-" if s.lag is None else str(s.lag)
    t.add_row("lag", Text(lag + ("  (group missing: producer creates it)" if not s.group_exists else ""),
                          style="bold yellow" if not s.group_exists else ""))
    t.add_row("pending", f"{s.pending}  ({s.consumers} consumer(s))")
    t.add_row("oldest pending", fmt.seconds(s.oldest_pending_age))
    t.add_row("dead letters", Text(f"{s.dead_letters}  ({s.dead_letter_stream})",
                                   style="bold red" if s.dead_letters else ""))
    done = sum(s.throughput)
    span = len(s.throughput) * s.interval
    t.add_row("throughput", f"{done:g} job(s) in the last {fmt.seconds(span)}" if s.throughput else "measuring…")
    return t


class QueuePanel(PollingPanel):
    INTERVAL = 2.0
    TITLE_DOWN = "Redis unreachable — queue numbers are not current"

    DEFAULT_CSS = """
    QueuePanel { height: 1fr; padding: 0 1; }
    QueuePanel #queue-stats { height: auto; margin: 1 0; }
    QueuePanel .section { text-style: bold; color: $accent; }
    QueuePanel Sparkline { height: 4; margin-top: 1; }
    """

    def compose(self) -> ComposeResult:
        yield Banner(id="queue-banner")
        yield Static("", id="queue-stats")
        yield Static("Throughput (jobs finished per sample)", classes="section")
        yield Sparkline([], id="queue-sparkline", summary_function=max)

    def source(self) -> Any:
        return self.app.sources.queue

    def read(self) -> QueueStats:
        return self.source().stats()

    def show(self, s: QueueStats) -> None:
        self.query_one("#queue-stats", Static).update(stats_table(s))
        self.query_one("#queue-sparkline", Sparkline).data = list(s.throughput) or [0.0]
