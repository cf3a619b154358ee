"""raibid TUI: the operator's screen for Flux, pending changes, the queue and the agents.

``raibid tui`` builds a :class:`~raibid_tui.sources.Sources` from its options and runs
:class:`~raibid_tui.app.RaibidApp`. Widgets take frozen row dataclasses from
``raibid_tui.sources``; nothing in the widgets talks to a backend.
"""

from __future__ import annotations

__all__ = ["RaibidApp", "Sources"]


def __getattr__(name: str):  # lazy: importing the package must not import textual
    if name == "RaibidApp":
        from raibid_tui.app import RaibidApp

        return RaibidApp
    if name == "Sources":
        from raibid_tui.sources import Sources

        return Sources
    raise AttributeError(name)
