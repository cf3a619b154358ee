"""Detail of one GitRepository or Kustomization: its fields, conditions and recent events."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from raibid_gitops.gitops.flux import TRANSIENT_REASONS
from raibid_tui.sources.flux import KUSTOMIZATION, Condition, EventRow, FluxRow

if TYPE_CHECKING:
    from raibid_tui.app import RaibidApp
    from raibid_tui.sources import FluxReader


def condition_status(c: Condition) -> Text:
    """A condition's status as Flux wrote it; Ready is coloured by the library's verdict
    (Ready=False with a transient reason, e.g. DependencyNotReady, is waiting, not failed)."""
    if c.type == "Ready":
        if c.status == "True":
            return Text(c.status, style="green")
        if c.status == "False" and c.reason not in TRANSIENT_REASONS:
            return Text(c.status, style="bold red")
        return Text(c.status, style="yellow")
    if c.type == "Stalled" and c.status == "True":
        return Text(c.status, style="bold red")
    return Text(c.status)


class FluxDetailScreen(ModalScreen[None]):

    if TYPE_CHECKING:
        app: RaibidApp  # the app this lives in, for the type checker
    BINDINGS = [Binding("escape,q,enter", "close", "Close")]

    DEFAULT_CSS = """
    FluxDetailScreen { align: center middle; }
    FluxDetailScreen > VerticalScroll {
        width: 90%; height: 90%; border: thick $accent; background: $surface; padding: 0 1;
    }
    FluxDetailScreen .section { text-style: bold; margin-top: 1; color: $accent; }
    FluxDetailScreen DataTable { height: auto; max-height: 14; }
    """

    def __init__(self, row: FluxRow) -> None:
        super().__init__()
        self.row = row

    def compose(self) -> ComposeResult:
        r = self.row
        fields = [("Object", r.ref), ("Status", r.status), ("Reason", r.reason or "-"),
                  ("Message", r.message or "-")]
        if r.kind == KUSTOMIZATION.kind:
            # Applied and attempted commits each with their own subject: when they differ the
            # cluster runs the first, and the second is being applied or failed.
            fields += [("Applied", r.revision or "-"), ("  commit", r.subject or "-")]
            if r.new_attempt:
                verdict = "⚠ failed: not applied" if r.failing_new_commit else "… not applied yet"
                fields += [("Attempted", f"{r.attempted}   {verdict}"), ("  commit", r.attempted_subject or "-")]
            elif r.attempted:
                fields.append(("Attempted", "= applied"))
        else:
            fields += [("Revision", r.revision or "-"), ("Commit", r.subject or "-")]
        fields += [("Source", r.source or "-"), ("Suspended", "yes" if r.suspended else "no"),
                   ("Generation", f"{r.generation} (observed {r.observed_generation})"),
                   ("Created", r.created.isoformat() if r.created else "-")]
        with VerticalScroll():
            # A Text, not markup: messages and commit subjects come from the cluster and the
            # repository, and a "[" in them must show as written.
            text = Text()
            for i, (k, v) in enumerate(fields):
                text.append(("\n" if i else "") + f"{k:<11}", style="bold")
                text.append(f" {v}")
            yield Static(text, id="detail-fields")
            yield Static("Conditions", classes="section")
            yield DataTable(id="detail-conditions", cursor_type="none")
            yield Static("Recent events", classes="section")
            yield Static("loading…", id="detail-events-status")
            yield DataTable(id="detail-events", cursor_type="none")

    def on_mount(self) -> None:
        conditions = self.query_one("#detail-conditions", DataTable)
        conditions.add_columns("TYPE", "STATUS", "REASON", "MESSAGE", "SINCE")
        for c in self.row.conditions:
            conditions.add_row(c.type, condition_status(c), c.reason, c.message, c.last_transition)
        events = self.query_one("#detail-events", DataTable)
        events.add_columns("TIME", "TYPE", "REASON", "FROM", "MESSAGE")
        source = getattr(self.app.sources, "flux", None)
        if source is not None:
            self._load_events(source)
        else:
            self.show_events((), None)

    @work(thread=True, exclusive=True, group="flux-events", exit_on_error=False)
    def _load_events(self, source: FluxReader) -> None:
        try:
            events = source.events(self.row)
        except Exception as exc:  # noqa: BLE001 - shown in place of the events
            self.app.call_from_thread(self.app.guarded, self.show_events, (), exc)
            return
        self.app.call_from_thread(self.app.guarded, self.show_events, events, None)

    def show_events(self, events: tuple[EventRow, ...], error: BaseException | None) -> None:
        status = self.query_one("#detail-events-status", Static)
        if error is not None:
            status.update(Text.assemble(("cannot list events: ", "bold red"), str(error)))
        else:
            status.update("" if events else "no events")
            status.display = not events
        table = self.query_one("#detail-events", DataTable)
        for e in events:
            table.add_row(e.time, e.type, e.reason, e.source, e.message)

    def action_close(self) -> None:
        self.dismiss(None)
