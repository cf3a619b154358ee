"""A pull request: its description rendered as Markdown (as Gitea shows it: the change table,
the rendered-object diff), the text diff with syntax colouring, and ``m`` to merge (confirmed)."""

from __future__ import annotations

from rich.syntax import Syntax
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Markdown, Static

from raibid_tui.sources.changes import PullRow

#: The longest description shown: a PR body is anyone-with-write-access's text, and Markdown
#: parsing is linear but not free; the change table and diff `set` writes are far shorter.
MAX_BODY = 20_000


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
                body = self.pr.body.strip()
                if body:
                    if len(body) > MAX_BODY:
                        body = body[:MAX_BODY] + f"\n\n*… {len(body) - MAX_BODY} more characters (see the PR in Gitea)*"
                    yield Markdown(body, id="diff-description")
                yield Static(Syntax(self.diff or "(empty diff)", "diff", theme="ansi_dark",
                                    word_wrap=False), id="diff-body")
            yield Footer()

    def action_close(self) -> None:
        self.dismiss(False)

    def action_merge(self) -> None:
        self.dismiss(True)
