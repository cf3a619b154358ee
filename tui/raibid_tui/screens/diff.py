"""A pull request's diff, read-only, with ``m`` to merge it (confirmed)."""

from __future__ import annotations

from rich.syntax import Syntax
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from raibid_tui.sources.changes import PullRow


class DiffScreen(ModalScreen[bool]):
    """Dismisses with True when the user asked to merge."""

    BINDINGS = [
        Binding("escape,q", "close", "Close"),
        Binding("m", "merge", "Merge…"),
    ]

    DEFAULT_CSS = """
    DiffScreen { align: center middle; }
    DiffScreen > Vertical { width: 95%; height: 95%; border: thick $accent; background: $surface; }
    DiffScreen #diff-title { text-style: bold; padding: 0 1; background: $accent 20%; }
    DiffScreen VerticalScroll { height: 1fr; }
    DiffScreen #diff-description { padding: 1; border-bottom: solid $accent; margin-bottom: 1; }
    """

    def __init__(self, pr: PullRow, diff: str) -> None:
        super().__init__()
        self.pr = pr
        self.diff = diff

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"#{self.pr.number} {self.pr.title}  ({self.pr.branch} by {self.pr.author}, "
                         f"verify: {self.pr.verify or 'none'})", id="diff-title", markup=False)
            with VerticalScroll():
                if self.pr.body.strip():
                    yield Static(self.pr.body.strip(), id="diff-description", markup=False)
                yield Static(Syntax(self.diff or "(empty diff)", "diff", theme="ansi_dark",
                                    word_wrap=False), id="diff-body")
            yield Footer()

    def action_close(self) -> None:
        self.dismiss(False)

    def action_merge(self) -> None:
        self.dismiss(True)
