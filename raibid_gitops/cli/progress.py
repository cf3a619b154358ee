"""The terminal's :class:`~raibid_gitops.gitops.reporting.Reporter`: live progress on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Live progress on stderr: ``[  3.1s] apply  flux-system/raibid-config  main@sha1:4b82..``.

    On a terminal the current line is rewritten in place; otherwise a line is printed only when
    the state changes, so logs stay short.
    """

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.clock = clock
        self.start = clock()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = ""
        self._open_line = False

    @property
    def live(self) -> bool:
        return self.tty and not self.quiet

    def elapsed(self) -> float:
        return self.clock() - self.start

    def update(self, stage: str, text: str) -> None:
        if self.quiet:
            return
        line = f"{stage:<7} {text}"
        if line == self._last and not self.tty:
            return
        self._last = line
        stamp = f"[{self.elapsed():6.1f}s] "
        if self.tty:
            self.stream.write("\r\033[K" + stamp + line)
            self._open_line = True
        else:
            self.stream.write(stamp + line + "\n")
        self.stream.flush()

    def done(self, stage: str, text: str) -> None:
        """A stage finished: always its own line."""
        if self.quiet:
            return
        stamp = f"[{self.elapsed():6.1f}s] "
        prefix = "\r\033[K" if self.tty and self._open_line else ""
        self.stream.write(f"{prefix}{stamp}{stage:<7} {text}\n")
        self.stream.flush()
        self._open_line = False
        self._last = ""

    def note(self, text: str) -> None:
        self.done("note", text)
