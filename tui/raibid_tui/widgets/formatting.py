"""How values look in the tables: ages, states, hashes. Pure functions of their input (and
of ``now``), so snapshots are stable."""

from __future__ import annotations

import re
from datetime import datetime

from rich.text import Text


def age(since: datetime | None, now: datetime) -> str:
    """`kubectl`-style age: 45s, 12m, 5h, 3d."""
    if since is None:
        return "-"
    s = max(0, int((now - since).total_seconds()))
    if s < 120:
        return f"{s}s"
    if s < 2 * 3600:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    s = int(value)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m {s % 60}s"
    return f"{s // 3600}h {(s % 3600) // 60}m"


STATUS_STYLE = {
    "Ready": "green",
    "Failed": "bold red",
    "Stalled": "bold red",
    "Reconciling": "yellow",
    "Waiting": "yellow",
    "Unknown": "dim",
    "Suspended": "magenta",
}


def status(value: str) -> Text:
    return Text(value, style=STATUS_STYLE.get(value, ""))


def short_hash(h: str) -> str:
    """``sha256:0123456789abcdef`` -> ``0123456789ab``."""
    return h.split(":", 1)[-1][:12] if h else "-"


def clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def first_problem(message: str) -> str:
    """What a settings message says is wrong, short: validation messages start with "<file>
    is not valid:" and list one "<file>:<line>: <field>: <problem>" per line below it; the
    field and problem of the first are kept."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        first = _LOCATION.sub("", lines[1], count=1)
        return first + (f" (+{len(lines) - 2} more)" if len(lines) > 2 else "")
    return lines[0] if lines else ""


#: "<file>:<line>: " before a problem (a file name can hold spaces and a ConfigMap's "[key]").
_LOCATION = re.compile(r"^.*?:\d+: ")
