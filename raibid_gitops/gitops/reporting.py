"""How long-running library flows (sync, bootstrap) report progress without printing: they call
a :class:`Reporter`; the CLI's prints to the terminal (raibid_gitops.cli.progress), the TUI's
shows a line in its panel, tests and benchmarks pass :class:`Silent`."""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    @property
    def live(self) -> bool:
        """True when the reader watches live (a terminal): flows then refresh about once a second
        even while nothing changes, so an elapsed counter stays current. Read only."""

    def update(self, stage: str, text: str) -> None:
        """The current state of ``stage`` (may be replaced by the next update)."""

    def done(self, stage: str, text: str) -> None:
        """``stage`` finished: a line that stays."""

    def note(self, text: str) -> None:
        """Something the user should know, once."""


class Silent:
    """Reports nothing."""

    live = False

    def update(self, stage: str, text: str) -> None:
        pass

    def done(self, stage: str, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass
