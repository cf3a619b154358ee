"""Run every benchmark and print one table: figure, ours, the baseline measured in the same run,
ratio. Writes it to benchmarks/RESULTS.md with the machine it ran on.

    python -m benchmarks            # short mode: a quick look (under 3 minutes)
    python -m benchmarks --full     # full mode: for the record (RESULTS.md)
    python -m benchmarks --only set,queue

Each benchmark is its own script (run one alone for its details) and runs here as its own
process with this checkout's code first on the path. Before anything runs, the packages are
compiled to bytecode, as installing them does: otherwise every CLI process would compile its
modules again (with PYTHONDONTWRITEBYTECODE set, nothing is ever cached). Benchmarks that need
the local stack (Gitea, kube-apiserver, Flux, KEDA: ``raibid-devstack build``) are skipped,
saying so, when it is not built. Ratios are ours / baseline for times and baseline / ours for
rates: above 1 is that many times the baseline's cost.

The figures depend on the machine and on what else runs on it: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from report import Row, compile_bytecode, load, table_lines  # noqa: E402


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    short: tuple[str, ...]
    full: tuple[str, ...]
    stack: bool = False  # needs `raibid-devstack build`
    #: Seconds before it is stopped (short, full).
    timeout: tuple[int, int] = (120, 1800)


BENCHMARKS = (
    Benchmark("startup", "startup.py", ("--runs", "9"), ("--runs", "31"), timeout=(60, 300)),
    Benchmark("set", "set_latency.py", ("--runs", "3"), ("--runs", "11"), timeout=(120, 900)),
    Benchmark("queue", "queue_throughput.py",
              ("--jobs", "400", "--rounds", "5", "--consumers", "2", "--sleep-jobs", "10"),
              ("--jobs", "2000", "--rounds", "9", "--consumers", "4", "--sleep-jobs", "40"), timeout=(150, 900)),
    Benchmark("pickup", "pickup_latency.py", ("--jobs", "40"), ("--jobs", "200"), timeout=(60, 600)),
    Benchmark("settings", "settings_propagation.py", ("--changes", "4"), ("--changes", "20", "--api"),
              timeout=(90, 900)),
    Benchmark("tui", "tui_repaint.py", ("--updates", "5"), ("--updates", "20"), stack=True, timeout=(150, 900)),
    Benchmark("sync", "sync_latency.py", ("--runs", "1"), ("--runs", "5"), stack=True, timeout=(240, 1800)),
    Benchmark("keda", "keda_reaction.py", ("--runs", "2", "--intervals", "2"), ("--runs", "5", "--intervals", "2,5"),
              stack=True, timeout=(300, 1800)),
    Benchmark("push", "push_to_apply.py", ("--runs", "1", "--interval", "10s"), ("--runs", "5", "--interval", "20s"),
              stack=True, timeout=(300, 1800)),
)
#: Short mode leaves these to full mode: each starts the whole stack (KEDA, Gitea, Flux) and
#: waits on Flux's and KEDA's polling, which alone outlasts a quick look.
FULL_ONLY = frozenset({"keda", "push"})


def machine() -> dict[str, str]:
    info = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cores": str(os.cpu_count()), "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.release()} {platform.machine()}"}
    try:
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal:"))
        info["memory"] = f"{mem_kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        info["memory"] = "?"
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["cpu"] = model or platform.processor() or "?"
    try:
        info["load"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        info["load"] = "?"
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = "?"
    try:
        sys.path.insert(0, str(ROOT))
        from raibid_gitops.gitops import kustomize

        info["kustomize"] = " ".join(kustomize.command())
    except Exception:  # noqa: BLE001 - only a label
        info["kustomize"] = "none found"
    return info


def child_env() -> dict[str, str]:
    """This checkout's code first on the path (not whatever raibid-gitops is installed)."""
    paths = [str(ROOT), str(ROOT / "agent"), str(ROOT / "tui")]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def stack_built() -> bool:
    try:
        return subprocess.run([sys.executable, "-m", "raibid_gitops.devstack.build", "--check"], env=child_env(),
                              capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run(bench: Benchmark, full: bool, logs: Path) -> tuple[list[Row], str]:
    """The benchmark's rows, and a status note ("" when it ran)."""
    out = logs / f"{bench.name}.json"
    log = logs / f"{bench.name}.log"
    cmd = [sys.executable, str(HERE / bench.script), *(bench.full if full else bench.short), "--json", str(out)]
    timeout = bench.timeout[1 if full else 0]
    with log.open("w") as fh:
        try:
            proc = subprocess.run(cmd, env=child_env(), stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return [], f"stopped after {timeout} s"
    if proc.returncode != 0 or not out.exists():
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:] or ["no output"]
        return [], f"failed (exit {proc.returncode}): {tail[0][:200]}"
    return load(out), ""


def render(rows: list[Row], notes: list[str], info: dict[str, str], full: bool, seconds: float,
           note: str = "") -> str:
    lines = [
        "# Benchmark results",
        "",
        f"`python -m benchmarks{' --full' if full else ''}` ({'full' if full else 'short'} mode, {seconds:.0f} s), "
        f"commit {info['commit']}, {info['date']}.",
        "",
        f"Machine: {info['cores']} cores, {info['memory']} memory, {info['cpu']}; {info['platform']}; "
        f"Python {info['python']}; kustomize: `{info['kustomize']}`; load average at the start {info['load']}.",
        *(["", note] if note else []),
        "",
        "Each baseline was measured in the same run as the figure next to it (interleaved where both are "
        "quick). Ratio: ours / baseline for times, baseline / ours for rates (above 1: that many times the "
        "baseline's cost).",
        "",
        *table_lines(rows),
    ]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="full mode, for the record (default: short mode)")
    ap.add_argument("--only", help="comma-separated names: " + ", ".join(b.name for b in BENCHMARKS))
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="where to write the table")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument("--note", default="", help="a line for the record, e.g. what else ran on the machine")
    args = ap.parse_args(argv)
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only.split(",")]
    if args.only and len(chosen) != len(args.only.split(",")):
        ap.error(f"unknown benchmark in --only; known: {', '.join(b.name for b in BENCHMARKS)}")

    started = time.monotonic()
    info = machine()
    compile_bytecode()
    has_stack = any(b.stack for b in chosen) and stack_built()
    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="raibid-benchmarks-") as tmp:
        for bench in chosen:
            if bench.stack and not has_stack:
                notes.append(f"{bench.name} ({bench.script}): skipped, the local stack is not built "
                             "(`raibid-devstack build`)")
                continue
            if not args.full and bench.name in FULL_ONLY and not args.only:
                notes.append(f"{bench.name} ({bench.script}): full mode only")
                continue
            t0 = time.monotonic()
            print(f"[{time.monotonic() - started:5.0f}s] {bench.name} ...", file=sys.stderr, flush=True)
            got, status = run(bench, args.full, Path(tmp))
            rows.extend(got)
            if status:
                notes.append(f"{bench.name} ({bench.script}): {status}")
            print(f"[{time.monotonic() - started:5.0f}s] {bench.name}: {status or 'done'} "
                  f"({time.monotonic() - t0:.0f}s)", file=sys.stderr, flush=True)
    text = render(rows, notes, info, args.full, time.monotonic() - started, args.note)
    print(text)
    if not args.no_write:
        args.out.write_text(text)
        print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
