"""raibid-agent: takes CI jobs from the Redis job stream and runs them (see main.py)."""

from __future__ import annotations

__all__: list[str] = []
