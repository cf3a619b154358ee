"""The banner a panel shows when its backend is unreachable (the other panels keep working)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class Banner(Static):
    """Hidden until :meth:`show`; a title line and the error's message (and hint)."""

    DEFAULT_CSS = """
    Banner {
        display: none;
        background: $error 30%;
        border-left: thick $error;
        color: $text;
        padding: 0 1;
        margin-bottom: 1;
        height: auto;
    }
    Banner.-shown { display: block; }
    """

    def show(self, title: str, message: str) -> None:
        # A Text, not markup: messages come from backends, and a "[/]" in one must show as is.
        self.update(Text.assemble((title, "bold"), "\n", message))
        self.add_class("-shown")

    def clear(self) -> None:
        if self.has_class("-shown"):
            self.remove_class("-shown")
            self.update("")

    @property
    def shown(self) -> bool:
        return self.has_class("-shown")
