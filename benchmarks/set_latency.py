"""`raibid gitops set`, `verify` and `render` through the CLI, next to the floor for the same work,
all interleaved in one loop (the machine's load hits both sides alike).

- **set** (local commit; and ``push``: each side pushes to its own bare repository): the floor
  is what any tool must do at least: edit the two lines (settings.yaml and the marked
  ScaledJob field), ``kustomize build`` the overlay, ``git commit`` (and ``git push``). `set`
  adds validation, the round-trip edit, the base render for the semantic diff, verify (both
  builds and the schema check) and the structured commit.
- **verify** / **render** of an unchanged repository (what CI and people run again and again),
  next to a bare ``kustomize build`` of the overlay; ``verify, cold`` clears the render cache
  first (a fresh clone).

Each CLI run is a new process (``python -m raibid_gitops.cli``), as a person or CI runs it.

    python benchmarks/set_latency.py [--runs 7] [--json FILE]

Not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import Row, compile_bytecode, emit, median

from raibid_gitops.gitops import kustomize, layout
from raibid_gitops.gitops.generate import init

PATCH = f"{layout.OVERLAY_DIR}/agent-scaledjob-patch.yaml"
#: Agents of a quarter CPU and 1 GiB, so that every maxReplicas up to 64 fits the node: each run
#: sets a value no run before it set, so `set` never finds the new tree's build in its render
#: cache (a repeated value would be a cache hit, faster than any real change).
AGENT_SIZE = ("agents.cpu=250m", "agents.memory=1Gi")
#: Never the default 8 (that would be no change).
VALUES = tuple(v for v in range(64, 0, -1) if v != 8)


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_repo(parent: Path, name: str, push: bool) -> Path:
    remote = None
    if push:
        remote = str(parent / f"{name}.git")
        subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", remote], check=True)
    path = init(parent / name, remote=remote, assignments=list(AGENT_SIZE)).path
    if push:
        git(path, "push", "--quiet", "origin", "main")
    return path


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def floor(repo: Path, value: int, push: bool) -> None:
    settings = repo / layout.SETTINGS_PATH
    settings.write_text(re.sub(r"(?m)^(  maxReplicas: )\d+$", rf"\g<1>{value}", settings.read_text()))
    patch = repo / PATCH
    patch.write_text(re.sub(r'(?m)^(\s*value: )\d+( # \{"\$raibid": "agents.maxReplicas"\})$',
                            rf"\g<1>{value}\g<2>", patch.read_text()))
    kustomize.build(repo / layout.OVERLAY_DIR)
    git(repo, "commit", "--quiet", "-am", f"maxReplicas {value}")
    if push:
        git(repo, "push", "--quiet", "origin", "HEAD:refs/heads/main")


def cli(repo: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "raibid_gitops.cli", "gitops", *args], cwd=repo, check=True,
                   capture_output=True)


def measure(runs: int) -> list[Row]:
    os.environ.setdefault("RAIBID_AUTHOR_NAME", "bench")
    os.environ.setdefault("RAIBID_AUTHOR_EMAIL", "bench@example.invalid")
    cols: dict[str, list[float]] = {k: [] for k in (
        "set", "set floor", "set push", "set push floor", "verify", "verify cold", "render", "kustomize build")}
    with tempfile.TemporaryDirectory(prefix="raibid-bench-") as tmp:
        parent = Path(tmp)
        repos = {name: make_repo(parent, name, push) for name, push in
                 (("cli", False), ("floor", False), ("cli-push", True), ("floor-push", True), ("check", False))}
        print(f"kustomize: {' '.join(kustomize.command())}", file=sys.stderr)
        # The render cache (.git/raibid/cache), cleared for the cold verify.
        cache = repos["check"] / ".git" / "raibid"
        for i in range(runs):
            value = VALUES[i]
            cols["set"].append(timed(lambda v=value: cli(repos["cli"], "set", f"agents.maxReplicas={v}")))
            cols["set floor"].append(timed(lambda v=value: floor(repos["floor"], v, False)))
            cols["set push"].append(timed(lambda v=value: cli(repos["cli-push"], "set", f"agents.maxReplicas={v}")))
            cols["set push floor"].append(timed(lambda v=value: floor(repos["floor-push"], v, True)))
            cols["verify"].append(timed(lambda: cli(repos["check"], "verify")))
            cols["kustomize build"].append(timed(lambda: kustomize.build(repos["check"] / layout.OVERLAY_DIR)))
            cols["render"].append(timed(lambda: cli(repos["check"], "render")))
            shutil.rmtree(cache, ignore_errors=True)
            cols["verify cold"].append(timed(lambda: cli(repos["check"], "verify")))
            print(f"run {i + 1}/{runs}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in cols.items()), file=sys.stderr)
    m = {k: median(v) for k, v in cols.items()}
    build = "bare kustomize build"
    return [
        Row("gitops set, local commit (CLI)", m["set"], m["set floor"], "ms", "edit + kustomize build + git commit",
            target="<= 3x"),
        Row("gitops set, push to a bare remote (CLI)", m["set push"], m["set push floor"], "ms",
            "edit + kustomize build + commit + push", target="<= 3x"),
        Row("gitops verify, unchanged repo (CLI)", m["verify"], m["kustomize build"], "ms", build, target="<= 3x"),
        Row("gitops verify, cold cache (CLI)", m["verify cold"], m["kustomize build"], "ms", build,
            note="(fresh clone: builds overlay and clusters/)"),
        Row("gitops render (CLI)", m["render"], m["kustomize build"], "ms", build, target="<= 3x"),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", help="also write the rows to this file (for python -m benchmarks)")
    args = ap.parse_args(argv)
    if not 1 <= args.runs <= len(VALUES):
        ap.error(f"--runs must be from 1 to {len(VALUES)} (each run sets a value no run before it set)")
    print(compile_bytecode(), file=sys.stderr)
    emit(measure(args.runs), args.json, f"set / verify / render: medians of {args.runs} interleaved runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
