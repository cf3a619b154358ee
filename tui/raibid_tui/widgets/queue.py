"""The Queue tab: the job stream's numbers, a throughput sparkline, and the newest jobs
(rows keyed by job id and updated in place)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from raibid_gitops import contract
from raibid_gitops.queue.jobs import Job
from raibid_tui.sources.queue import MAX_JOBS, QueueStats
from raibid_tui.widgets import formatting as fmt
from raibid_tui.widgets.banner import Banner
from raibid_tui.widgets.polling import PollingPanel
from raibid_tui.widgets.table import KeyedTable

JOB_STYLE = {
    contract.STATE_QUEUED: "cyan", contract.STATE_RUNNING: "yellow", contract.STATE_SUCCEEDED: "green",
    contract.STATE_FAILED: "bold red", contract.STATE_TIMED_OUT: "bold red", contract.STATE_DEAD: "bold red",
    contract.STATE_CANCELLED: "magenta",
}
#: Widths of the job columns: records come from Redis, and anything may have written them.
ID_WIDTH, REPO_WIDTH, REF_WIDTH, AGENT_WIDTH = 28, 36, 24, 28
#: A commit as `git log --oneline` shows it.
COMMIT_WIDTH = 12
#: Replicas listed in the stats (a primary has a handful; anything may answer INFO).
MAX_REPLICAS_SHOWN = 8


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
    if s.redis is not None:
        add_redis_rows(t, s.redis)
    return t


def add_redis_rows(t: Table, r: Any) -> None:
    """Where the queue lives: primary, replicas (state, lag), Sentinels, failovers. Addresses
    come from Redis and the Sentinels: shown as text, cut short."""
    t.add_row("redis", Text(f"{fmt.clip(r.primary, 60)}  ({r.mode}, primary)"))
    if r.replicas:
        cells = Text()
        for i, x in enumerate(r.replicas[:MAX_REPLICAS_SHOWN]):
            lag = "-" if x.lag_seconds is None else f"{x.lag_seconds}s"
            cells.append(("\n" if i else "") + f"{fmt.clip(x.address, 60)}  {fmt.clip(x.state, 16)}, lag {lag}",
                         style="" if x.state == "online" else "bold yellow")
        t.add_row("replicas", cells)
    else:
        t.add_row("replicas", Text("none" + ("  (no copy survives losing the primary)" if r.mode == "sentinel" else ""),
                                   style="bold red" if r.mode == "sentinel" else "dim"))
    if r.mode == "sentinel":
        t.add_row("sentinels", "-" if r.sentinels is None else f"{r.sentinels} (quorum {r.quorum})")
        if r.failovers:
            last = r.failovers[-1]
            when = datetime.fromtimestamp(last.at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
            t.add_row("failovers", Text(f"{len(r.failovers)}, last {when}: {fmt.clip(last.old, 40)} → "
                                        f"{fmt.clip(last.new, 40)}", style="bold yellow"))
        else:
            t.add_row("failovers", "none seen")


def _when(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, tz=UTC) if epoch is not None else None


def job_cells(j: Job, now: datetime) -> tuple[object, ...]:
    """JOB, STATE, REPO, REF, COMMIT, AGENT, AGE (since submitted)."""
    return (fmt.clip(j.id, ID_WIDTH), Text(fmt.clip(j.state, 16) or "?", style=JOB_STYLE.get(j.state, "")),
            fmt.clip(j.repo, REPO_WIDTH) or "-", fmt.clip(j.ref, REF_WIDTH) or "-",
            j.commit[:COMMIT_WIDTH] or "-", fmt.clip(j.agent, AGENT_WIDTH) or "-",
            fmt.age(_when(j.submitted_at), now))


class QueuePanel(PollingPanel):
    INTERVAL = 2.0
    TITLE_DOWN = "Redis unreachable — queue numbers are not current"

    DEFAULT_CSS = """
    QueuePanel { height: 1fr; padding: 0 1; }
    QueuePanel #queue-top { height: auto; margin: 1 0; }
    QueuePanel #queue-stats { width: auto; height: auto; margin-right: 4; }
    QueuePanel #queue-throughput { width: 1fr; height: auto; }
    QueuePanel .section { text-style: bold; color: $accent; }
    QueuePanel Sparkline { height: 4; margin-top: 1; }
    QueuePanel #jobs-table { height: 1fr; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: Submission time of each job shown, for the newest-first order.
        self._submitted: dict[str, float] = {}

    def compose(self) -> ComposeResult:
        yield Banner(id="queue-banner")
        with Horizontal(id="queue-top"):
            yield Static("", id="queue-stats")
            with Vertical(id="queue-throughput"):
                yield Static("Throughput (jobs finished per sample)", classes="section")
                yield Sparkline([], id="queue-sparkline", summary_function=max)
        yield Static(f"Jobs (newest {MAX_JOBS})", classes="section", id="jobs-title")
        # Newest first and nothing to act on: a cursor following its job would scroll the view
        # down, away from the jobs arriving on top.
        table = KeyedTable(id="jobs-table", follow_row=False)
        for key, label in (("id", "JOB"), ("state", "STATE"), ("repo", "REPO"), ("ref", "REF"),
                           ("commit", "COMMIT"), ("agent", "AGENT"), ("age", "AGE")):
            table.add_column(label, key=key)
        yield table

    def source(self) -> Any:
        return self.app.sources.queue

    def read(self) -> QueueStats:
        return self.source().stats()

    def show(self, s: QueueStats) -> None:
        self.query_one("#queue-stats", Static).update(stats_table(s))
        self.query_one("#queue-sparkline", Sparkline).data = list(s.throughput) or [0.0]
        self.show_jobs(s)

    def show_jobs(self, s: QueueStats) -> None:
        title = Text(f"Jobs (newest {MAX_JOBS})", style="")
        if s.jobs_error:
            title.append(f" — cannot list them: {s.jobs_error}", style="bold red")
        elif not s.jobs:
            title.append(" — none yet (`raibid queue submit` adds one)", style="dim")
        self.query_one("#jobs-title", Static).update(title)
        table = self.query_one("#jobs-table", KeyedTable)
        now = self.app.now()
        ids = {j.id for j in s.jobs}
        for key in set(table.keys()) - ids:
            table.discard(key)
            self._submitted.pop(key, None)
        added = False
        for j in s.jobs:
            added |= j.id not in self._submitted
            self._submitted[j.id] = j.submitted_at or 0.0
            table.upsert(j.id, job_cells(j, now))
        if added:
            # New rows are appended: put the newest on top (ties: the greater id first).
            table.sort_by_key(lambda jid: (self._submitted.get(jid, 0.0), jid), reverse=True)
