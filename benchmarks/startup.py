"""Start-up of the `raibid` command line, next to the interpreter's own: ``raibid --help`` and
``raibid gitops --help`` against ``python -c pass`` (target: at most 2x), interleaved.

Each is a new process, as a person runs it: ``python -m raibid_gitops.cli``.

    python benchmarks/startup.py [--runs 21] [--json FILE]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import Row, compile_bytecode, emit, median

CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "raibid --help": [sys.executable, "-m", "raibid_gitops.cli", "--help"],
    "raibid gitops --help": [sys.executable, "-m", "raibid_gitops.cli", "gitops", "--help"],
}


def measure(runs: int) -> list[Row]:
    times: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(runs):
        for name, cmd in CASES.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append((time.perf_counter() - t0) * 1000)
    base = median(times["python -c pass"])
    return [Row(name, median(times[name]), base, "ms", "python -c pass", target="<= 2x")
            for name in ("raibid --help", "raibid gitops --help")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--json", help="also write the rows to this file (for python -m benchmarks)")
    args = ap.parse_args(argv)
    print(compile_bytecode(), file=sys.stderr)
    emit(measure(args.runs), args.json, f"start-up: medians of {args.runs} interleaved runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
