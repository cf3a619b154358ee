"""Benchmark: with 200 Kustomizations and 200 GitRepositories in the API server, a change to
one object repaints only its row.

Starts etcd + kube-apiserver (or uses --kubeconfig), creates the objects with a status, runs
the TUI headless (Textual's test driver, a 170x50 screen) with the Flux tab live, then changes
one Kustomization's status N times from a helper process (another process, so this one's CPU time is
only the TUI's: watch thread + main thread). For each change it prints

- wall time from the change to the row showing it,
- CPU time of this process for the update (JSON decode, row, cell render, repaint),
- table lines rendered (the row is one line; a full repaint would be every visible line),

then the same change made through ``DataTable.update_cell`` for comparison, and memory (RSS).

    python benchmarks/tui_repaint.py [--kubeconfig FILE] [--updates 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

N_EACH = 200
NAMESPACE = "tui-bench"
REV = "main@sha1:" + "0123abcd" * 5


#: Patches statuses on request (one line in: name and message), in its own process so that
#: the TUI process's CPU time holds only the TUI's work.
PATCHER = r"""
import json, sys
from kubernetes import client, config
api = client.CustomObjectsApi(config.new_client_from_config(config_file=sys.argv[1]))
for line in sys.stdin:
    name, message = line.rstrip("\n").split(" ", 1)
    body = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
            "message": message, "lastTransitionTime": "2026-11-28T00:00:00Z", "observedGeneration": 1}]}}
    api.patch_namespaced_custom_object_status("kustomize.toolkit.fluxcd.io", "v1", sys.argv[2],
                                              "kustomizations", name, body)
    print("ok", flush=True)
"""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def kubectl(kubeconfig: str, *args: str, input: str | None = None) -> str:
    return subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *args], input=input, text=True,
                          capture_output=True, check=True).stdout


def populate(kubeconfig: str) -> None:
    from kubernetes import client, config

    kubectl(kubeconfig, "create", "namespace", NAMESPACE)
    docs = []
    for i in range(N_EACH):
        docs.append({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                     "metadata": {"name": f"repo-{i:03d}", "namespace": NAMESPACE},
                     "spec": {"interval": "1m", "url": f"http://gitea.example/raibid/repo-{i:03d}.git",
                              "ref": {"branch": "main"}}})
        docs.append({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                     "metadata": {"name": f"app-{i:03d}", "namespace": NAMESPACE},
                     "spec": {"interval": "1m", "path": "./", "prune": True,
                              "sourceRef": {"kind": "GitRepository", "name": f"repo-{i:03d}"}}})
    kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig))
    cond = [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "ok",
             "lastTransitionTime": "2026-11-28T00:00:00Z", "observedGeneration": 1}]

    def status(doc: dict) -> None:
        group, version = doc["apiVersion"].split("/")
        plural = "gitrepositories" if doc["kind"] == "GitRepository" else "kustomizations"
        name = doc["metadata"]["name"]
        obj = api.get_namespaced_custom_object(group, version, NAMESPACE, plural, name)
        if doc["kind"] == "GitRepository":
            obj["status"] = {"observedGeneration": 1, "conditions": cond, "artifact": {
                "revision": REV, "path": "p", "url": "http://x", "digest": "sha256:00",
                "lastUpdateTime": "2026-11-28T00:00:00Z"}}
        else:
            obj["status"] = {"observedGeneration": 1, "conditions": cond, "lastAppliedRevision": REV,
                             "lastAttemptedRevision": REV}
        api.replace_namespaced_custom_object_status(group, version, NAMESPACE, plural, name, obj)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(status, docs))


async def measure(kubeconfig: str, updates: int) -> dict[str, float]:
    from raibid_tui.app import RaibidApp
    from raibid_tui.sources import Sources
    from raibid_tui.sources.flux import FluxSource
    from raibid_tui.sources.kube import KubeConn
    from raibid_tui.widgets.table import KeyedTable

    rendered = [0]
    original_render_line = KeyedTable.render_line

    def counting_render_line(self, y):  # type: ignore[no-untyped-def]
        rendered[0] += 1
        return original_render_line(self, y)

    KeyedTable.render_line = counting_render_line  # type: ignore[method-assign]
    rss_before = rss_mb()
    sources = Sources(flux=FluxSource(KubeConn(kubeconfig), NAMESPACE))
    app = RaibidApp(sources)
    async with app.run_test(size=(170, 50)) as pilot:
        panel = app.query_one("#flux-panel")
        t0 = time.monotonic()
        while len(panel.rows) < 2 * N_EACH:
            await pilot.pause(0.05)
            if time.monotonic() - t0 > 120:
                raise SystemExit(f"only {len(panel.rows)} rows after 120 s")
        await pilot.pause(0.5)
        print(f"initial list: {len(panel.rows)} rows in {time.monotonic() - t0:.2f}s; "
              f"RSS {rss_mb():.1f} MB (before app {rss_before:.1f} MB)")
        # A row on screen, so its repaint is real work (rows off screen are never rendered).
        target = next(r for r in panel.rows.values() if r.name == "app-000")
        panel.table.move_cursor(row=panel.table.get_row_index(target.uid))
        visible_lines = panel.table.size.height
        patcher = subprocess.Popen([sys.executable, "-c", PATCHER, kubeconfig, NAMESPACE], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)

        shown_at: dict[str, float] = {}
        apply = panel.apply

        def timed_apply(update):  # type: ignore[no-untyped-def]
            apply(update)
            for row in update.rows:
                shown_at[row.message] = time.monotonic()

        panel.apply = timed_apply  # the watch worker looks the method up on the instance
        settle = 0.3  # seconds the loop runs per sample: the update and its repaint fit well inside

        async def change(message: str, wait: float = settle) -> tuple[float, float]:
            """(CPU seconds of this process during ``wait``, wall seconds to the row shown)."""
            cpu0, wall0 = time.process_time(), time.monotonic()
            patcher.stdin.write(f"app-000 {message}\n")
            patcher.stdin.flush()
            await asyncio.sleep(wait)
            cpu = time.process_time() - cpu0
            patcher.stdout.readline()
            assert panel.rows[target.uid].message == message, "update not shown within the settle time"
            return cpu, shown_at[message] - wall0

        await change("bench update warm-up", wait=10.0)  # same width as the rest: no column resize below
        await asyncio.sleep(0.5)
        # What the process burns in ``settle`` seconds with no update (subtracted below).
        idles = []
        for _ in range(5):
            cpu0 = time.process_time()
            await asyncio.sleep(settle)
            idles.append(time.process_time() - cpu0)
        idle = statistics.median(idles)
        walls, cpus, lines = [], [], []
        for i in range(updates):
            rendered[0] = 0
            cpu, wall = await change(f"bench update {i:07d}")
            cpus.append(max(0.0, cpu - idle))
            walls.append(wall)
            lines.append(rendered[0])
        patcher.stdin.close()
        patcher.wait()
        print(f"{updates} updates of one Kustomization (in-place row update):")
        print(f"  CPU per update  median {statistics.median(cpus) * 1000:.1f} ms, "
              f"max {max(cpus) * 1000:.1f} ms (this process: watch thread + main thread; "
              f"idle {idle * 1000:.1f} ms per {settle}s subtracted)")
        print(f"  wall from the status patch to the row showing it  median {statistics.median(walls) * 1000:.0f} ms")
        print(f"  table lines rendered per update  median {statistics.median(lines):g}, max {max(lines)} "
              f"(table shows {visible_lines} lines)")
        # The same change through DataTable.update_cell, which refreshes the whole widget.
        base_lines, base_cpu = [], []
        for i in range(updates):
            rendered[0] = 0
            cpu0 = time.process_time()
            panel.table.update_cell(target.uid, "message", f"Succeeded: update_cell {i:06d}")
            await asyncio.sleep(settle)
            base_cpu.append(max(0.0, time.process_time() - cpu0 - idle))
            base_lines.append(rendered[0])
        print("for comparison, DataTable.update_cell (refreshes the whole table):")
        print(f"  table lines rendered per update  median {statistics.median(base_lines):g}; "
              f"CPU median {statistics.median(base_cpu) * 1000:.1f} ms (no watch/JSON work included)")
        print(f"memory: RSS {rss_mb():.1f} MB, peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB")
        sources.stop()
        return {"lines": statistics.median(lines), "base_lines": statistics.median(base_lines),
                "cpu_ms": statistics.median(cpus) * 1000, "base_cpu_ms": statistics.median(base_cpu) * 1000,
                "wall_ms": statistics.median(walls) * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting etcd + kube-apiserver")
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--json", help="also write the rows to this file (for python -m benchmarks)")
    args = parser.parse_args(argv)
    stack = None
    if args.kubeconfig:
        kubeconfig = args.kubeconfig
    else:
        from raibid_gitops.devstack.processes import start_kube

        t = time.monotonic()
        stack = start_kube(Path(tempfile.mkdtemp(prefix="tui-bench-")))
        kubeconfig = str(stack.kubeconfig)
        print(f"kube-apiserver up in {time.monotonic() - t:.1f}s", file=sys.stderr)
    try:
        t = time.monotonic()
        populate(kubeconfig)
        print(f"created {N_EACH} GitRepositories + {N_EACH} Kustomizations with status "
              f"in {time.monotonic() - t:.1f}s", file=sys.stderr)
        got = asyncio.run(measure(kubeconfig, args.updates))
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from report import Row, emit

        emit([Row("TUI: table lines rendered per Kustomization update", got["lines"], got["base_lines"], "lines",
                  "DataTable.update_cell"),
              Row("TUI: CPU per update (watch + render)", got["cpu_ms"], got["base_cpu_ms"], "ms",
                  "DataTable.update_cell (render only)"),
              Row("TUI: status patch -> row shows it", got["wall_ms"], None, "ms", "")], args.json)
    finally:
        if stack is not None:
            stack.stop()
        elif args.kubeconfig:
            subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "delete", "namespace", NAMESPACE,
                            "--wait=false"], capture_output=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TEXTUAL", "")
    sys.exit(main())
