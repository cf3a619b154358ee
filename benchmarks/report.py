"""Shared by the benchmark scripts: one row per figure (ours next to the baseline measured in
the same run), printed as a table and, with ``--json FILE``, written for ``python -m benchmarks``.
Not a benchmark itself."""

from __future__ import annotations

import compileall
import json
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One figure. ``ours`` and ``baseline`` in ``unit``; ``better`` says which way is good
    ("lower" for times, "higher" for rates), so the ratio reads the same way for both."""

    figure: str
    ours: float | None
    baseline: float | None
    unit: str
    baseline_label: str
    better: str = "lower"
    target: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.baseline is None or self.ours == 0 or self.baseline == 0:
            return None
        return self.ours / self.baseline if self.better == "lower" else self.baseline / self.ours


#: What a timed run imports from the working tree (an editable install), and the benchmarks.
PACKAGES = ("raibid_gitops", "agent/raibid_agent", "tui/raibid_tui", "benchmarks")


def compile_bytecode() -> str:
    """Byte-compile the project's packages, as ``pip install`` does for a regular install and
    Python does on a module's first import, so a timed CLI run reads cached bytecode like every
    run after a user's first. Where PYTHONDONTWRITEBYTECODE is set (this development machine
    sets it), nothing else would write it, and each timed run would compile ~40 of our modules
    from source again (~60 ms on 2 cores) - a cost no installed copy pays. Returns a line for
    the output."""
    root = Path(__file__).resolve().parent.parent
    ok = all(compileall.compile_dir(str(root / pkg), quiet=1) for pkg in PACKAGES)
    if not ok:
        raise SystemExit("benchmarks: byte-compiling the project failed (see above)")
    unset = "unset" if not (os.environ.get("PYTHONDONTWRITEBYTECODE") or sys.flags.dont_write_bytecode) else "set"
    return f"bytecode: the project's packages byte-compiled first (PYTHONDONTWRITEBYTECODE is {unset})"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "jobs/s":
        return f"{value:.0f} jobs/s"
    return f"{value:.3g} {unit}".strip()


def table_lines(rows: Sequence[Row]) -> list[str]:
    """A Markdown table: figure | ours | baseline (same run) | ratio | target."""
    out = ["| figure | ours | baseline (same run) | ratio | target |", "|---|---:|---|---:|---|"]
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        base = f"{fmt(r.baseline, r.unit)} ({r.baseline_label})" if r.baseline_label else fmt(r.baseline, r.unit)
        note = f" {r.note}" if r.note else ""
        out.append(f"| {r.figure} | {fmt(r.ours, r.unit)} | {base} | {ratio} | {r.target}{note} |")
    return out


def emit(rows: Sequence[Row], json_path: str | None, title: str = "") -> None:
    """Print the rows as a table; with ``json_path``, also write them there."""
    if title:
        print(f"\n{title}")
    for line in table_lines(rows):
        print(line)
    if json_path:
        Path(json_path).write_text(json.dumps([asdict(r) for r in rows], indent=2))


def load(json_path: Path) -> list[Row]:
    return [Row(**r) for r in json.loads(json_path.read_text())]
