"""Times as people and programs read them: ISO 8601 in UTC, everywhere raibid prints one.

Redis records keep Unix times (``1764302531.123456``: cheap to compare in Lua scripts); what
`-o json|yaml` and tables show is ISO 8601 (``2026-11-28T04:02:11.123456Z``), as Kubernetes
and Flux write theirs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


def _utc(ts: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, ValueError, OSError):
        return None  # not a time any clock shows (a record written by hand, say)


@overload
def iso(ts: float) -> str: ...
@overload
def iso(ts: float | None) -> str | None: ...


def iso(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 in UTC with microseconds (what the records store), or None.
    A number no date can hold is shown as the number."""
    if ts is None:
        return None
    when = _utc(ts)
    return str(ts) if when is None else when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def iso_seconds(ts: float | None) -> str:
    """The same to the second, for table cells; "" for None."""
    if ts is None:
        return ""
    when = _utc(ts)
    return str(ts) if when is None else when.strftime("%Y-%m-%dT%H:%M:%SZ")
