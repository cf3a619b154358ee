"""The raibid TUI application: four tabs (Flux, Changes, Queue, Agents), bindings in the
footer, ``?`` for help. Each tab reads its own backend, so one that is down only shows a
banner in its own tab."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, TabbedContent, TabPane

from raibid_tui.sources import Sources
from raibid_tui.widgets.agents import AgentsPanel, PoolPanel
from raibid_tui.widgets.changes import ChangesPanel
from raibid_tui.widgets.flux import FluxPanel
from raibid_tui.widgets.queue import QueuePanel

TABS = ("flux", "changes", "queue", "agents")


class RaibidApp(App[int]):
    """``live=False`` starts no worker (snapshot tests fill the panels themselves);
    ``clock`` gives "now" for ages (fixed in tests)."""

    TITLE = "raibid"
    SUB_TITLE = "GitOps for the CI agent pool"

    BINDINGS = [
        Binding("1", "tab('flux')", "Flux", show=False),
        Binding("2", "tab('changes')", "Changes", show=False),
        Binding("3", "tab('queue')", "Queue", show=False),
        Binding("4", "tab('agents')", "Agents", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    CSS = """
    TabbedContent { height: 1fr; }
    TabPane { padding: 0; }
    """

    def __init__(self, sources: Sources | None = None, *, live: bool = True,
                 clock: Callable[[], datetime] | None = None) -> None:
        super().__init__()
        self.sources = sources or Sources()
        self.live = live
        self._clock = clock or (lambda: datetime.now(UTC))
        #: Hash of the live ConfigMap's settings, from the Changes tab; agents on another are stale.
        self.expected_hash: str | None = None
        #: An unexpected error that ended the app (the CLI prints it, one line, no traceback).
        self.unexpected: BaseException | None = None
        if self.sources.where:
            self.sub_title = self.sources.where

    def now(self) -> datetime:
        return self._clock()

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="flux"):
            with TabPane("Flux [1]", id="flux"):
                yield FluxPanel(live=self.live, id="flux-panel")
            with TabPane("Changes [2]", id="changes"):
                yield ChangesPanel(live=self.live, id="changes-panel")
            with TabPane("Queue [3]", id="queue"):
                yield QueuePanel(live=self.live, id="queue-panel")
            with TabPane("Agents [4]", id="agents"):
                yield PoolPanel(live=self.live, id="pool-panel")
                yield AgentsPanel(live=self.live, id="agents-panel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#flux-table").focus()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._focus_tab(event.pane.id or "")

    def _focus_tab(self, tab: str) -> None:
        target = {"flux": "#flux-table", "changes": "#pulls-table", "queue": "#jobs-table",
                  "agents": "#agents-table"}.get(tab)
        if target:
            self.query_one(target).focus()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self._focus_tab(tab)

    def action_help(self) -> None:
        from raibid_tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        self.sources.stop()
        self.exit(0)

    def on_unmount(self) -> None:
        self.sources.stop()

    def _fatal_error(self) -> None:
        # Textual ends the app on an unhandled exception (the failed widget's message loop has
        # stopped) and would print a traceback; the operator gets one line from the CLI instead.
        # Data from backends cannot get here: workers catch everything and main-thread updates
        # run through ``guarded`` (a notification, and the app goes on).
        self.unexpected = self._exception
        self.bell()
        self._close_messages_no_wait()

    def guarded(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call ``fn``; an exception becomes an error notification instead of ending the app."""
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the UI must survive odd backend data
            self.notify(f"{type(exc).__name__}: {exc}", title="Could not show an update", severity="error",
                        timeout=15)

    def panels(self) -> dict[str, Any]:
        return {t: self.query_one(f"#{t}-panel") for t in TABS}
