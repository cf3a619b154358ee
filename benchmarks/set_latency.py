"""How long `raibid gitops set` takes, next to the floor for the same change.

The floor is what any tool must do at least: edit the two lines (settings.yaml and the marked
ScaledJob field), `kustomize build` the overlay, `git commit`. `set` adds validation, the
round-trip YAML edit, a render of the base for the semantic diff, verify (both kustomize
builds and the schema check of every object) and the structured commit message.

    python benchmarks/set_latency.py [--runs 7] [--push]

``--push`` gives both sides a bare repository as origin and adds `git push` to the floor.
Not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from raibid_gitops.gitops import kustomize, layout
from raibid_gitops.gitops.change import set_settings
from raibid_gitops.gitops.generate import init

PATCH = f"{layout.OVERLAY_DIR}/agent-scaledjob-patch.yaml"
#: Never the default 8 (that would be no change) nor twice in a row; 10 x 2 CPU fits 20.
VALUES = (2, 3, 4, 5, 6, 7, 9, 10)


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_repo(parent: Path, name: str, push: bool) -> Path:
    remote = None
    if push:
        remote = str(parent / f"{name}.git")
        subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", remote], check=True)
    path = init(parent / name, remote=remote).path
    if push:
        git(path, "push", "--quiet", "origin", "main")
    return path


def floor(repo: Path, value: int, push: bool) -> float:
    t0 = time.perf_counter()
    settings = repo / layout.SETTINGS_PATH
    settings.write_text(re.sub(r"(?m)^(  maxReplicas: )\d+$", rf"\g<1>{value}", settings.read_text()))
    patch = repo / PATCH
    patch.write_text(re.sub(r'(?m)^(\s*value: )\d+( # \{"\$raibid": "agents.maxReplicas"\})$',
                            rf"\g<1>{value}\g<2>", patch.read_text()))
    kustomize.build(repo / layout.OVERLAY_DIR)
    git(repo, "commit", "--quiet", "-am", f"maxReplicas {value}")
    if push:
        git(repo, "push", "--quiet", "origin", "HEAD:refs/heads/main")
    return time.perf_counter() - t0


def set_library(repo: Path, value: int) -> float:
    t0 = time.perf_counter()
    set_settings([f"agents.maxReplicas={value}"], repo=repo)
    return time.perf_counter() - t0


def set_cli(repo: Path, value: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "raibid_gitops.cli", "gitops", "set", f"agents.maxReplicas={value}"],
                   cwd=repo, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--push", action="store_true", help="push to a local bare repository on both sides")
    args = ap.parse_args()
    os.environ.setdefault("RAIBID_AUTHOR_NAME", "bench")
    os.environ.setdefault("RAIBID_AUTHOR_EMAIL", "bench@example.invalid")
    with tempfile.TemporaryDirectory(prefix="raibid-bench-") as tmp:
        parent = Path(tmp)
        repos = {name: make_repo(parent, name, args.push) for name in ("cli", "lib", "floor")}
        print(f"kustomize: {' '.join(kustomize.command())}; push: {'yes (bare repo)' if args.push else 'no'}")
        print(f"{'run':>3}  {'set (CLI)':>10}  {'set (lib)':>10}  {'floor':>8}  {'CLI/floor':>9}")
        rows = []
        for i in range(args.runs):
            value = VALUES[i % len(VALUES)]
            c = set_cli(repos["cli"], value)
            lib = set_library(repos["lib"], value)
            f = floor(repos["floor"], value, args.push)
            rows.append((c, lib, f))
            print(f"{i + 1:>3}  {c * 1000:>8.0f}ms  {lib * 1000:>8.0f}ms  {f * 1000:>6.0f}ms  {c / f:>8.1f}x")
        med = [statistics.median(col) for col in zip(*rows)]
        print(f"{'med':>3}  {med[0] * 1000:>8.0f}ms  {med[1] * 1000:>8.0f}ms  {med[2] * 1000:>6.0f}ms  "
              f"{med[0] / med[2]:>8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
