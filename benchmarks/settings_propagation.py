"""Settings propagation: a ConfigMap update -> a running agent applies it (target: under 1 s).

Measured until the agent's heartbeat reports the new settings hash (the agent pushes its
heartbeat at once on a change), i.e. the change is *in effect*, not only written.

- mounted directory: the update is made the way kubelet makes it (atomic ``..data`` swap);
  this measures the agent's part only. In a cluster, kubelet itself first takes up to its
  sync period plus its ConfigMap cache TTL (60-90 s with defaults) to rewrite the volume;
- API watch (``--api``): the ConfigMap is replaced through a real kube-apiserver (the devstack's
  etcd + kube-apiserver, started here; needs `raibid-devstack build`) and the agent, started
  with ``--settings-configmap``, is watching it. This is the end-to-end figure.

The baseline, measured the same way in the same run: a bare watcher process that looks at the
directory's ``..data`` link as often as the agent does (``POLL_SECONDS``) and, on a change,
writes the new text's digest to a Redis hash (what any reader polling that often must do at
least: notice the swap, read the file, report it). Changes land at random points of the poll.

Usage: python benchmarks/settings_propagation.py [--changes 20] [--api] [--json FILE]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_agents import BENCH_SETTINGS, bench, percentile, side_by_side, summary
from report import Row, emit

#: The bare watcher: poll ..data, read settings.yaml, HSET its digest (argv: dir, url, password).
RAW_WATCHER = r"""
import hashlib, os, sys, time
import redis
d, url, password = sys.argv[1], sys.argv[2], sys.argv[3]
r = redis.Redis.from_url(url, password=password, decode_responses=True)
last = None
while True:
    try:
        target = os.readlink(os.path.join(d, "..data"))
    except OSError:
        target = None
    if target != last:
        last = target
        text = open(os.path.join(d, "settings.yaml"), encoding="utf-8").read()
        r.hset("bench:raw-watcher", "digest", hashlib.sha256(text.encode()).hexdigest())
    time.sleep(float(sys.argv[4]))
"""


def _version(i: int) -> str:
    # A harmless change per round: a different log cap gives a different settings hash.
    return BENCH_SETTINGS.replace("logMaxLen: 1000", f"logMaxLen: {1000 + i + 1}")


def _measure_raw(client, apply, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    import hashlib

    out: list[float] = []
    for i in range(n):
        text = _version(100 + i)
        want = hashlib.sha256(text.encode()).hexdigest()
        t0 = time.perf_counter()
        apply(text)
        while client.hget("bench:raw-watcher", "digest") != want:
            if time.perf_counter() - t0 > 30:
                raise SystemExit(f"the raw watcher did not see round {i} within 30 s")
            time.sleep(0.002)
        out.append(time.perf_counter() - t0)
        time.sleep(random.uniform(0.1, 0.4))  # the next change lands anywhere in the poll cycle
    return out


def _measure(client, agent_id: str, apply, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    from raibid_gitops import contract as c
    from raibid_gitops.settings import load_text

    out: list[float] = []
    for i in range(n):
        text = _version(i)
        want = load_text(text).hash()
        t0 = time.perf_counter()
        apply(text)
        while client.hget(c.agent_key(agent_id), c.AGENT_SETTINGS_HASH) != want:
            if time.perf_counter() - t0 > 30:
                raise SystemExit(f"agent did not apply settings round {i} within 30 s")
            time.sleep(0.002)
        out.append(time.perf_counter() - t0)
        time.sleep(random.uniform(0.1, 0.4))  # the next change lands anywhere in the poll cycle
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--api", action="store_true", help="also measure through a real kube-apiserver watch")
    ap.add_argument("--json", help="also write the rows to this file (for python -m benchmarks)")
    args = ap.parse_args()

    from raibid_agent.volume_writer import kubelet_write
    from raibid_gitops import contract as c

    rows: list[tuple[str, str]] = []
    with bench() as b:
        client = b.client()
        b.agent("mounted")
        b.wait_agents(["mounted"])
        mounted = _measure(client, "mounted",
                           lambda text: kubelet_write(b.settings_dir, {c.SETTINGS_KEY: text}), args.changes)
        rows.append(("mounted dir (..data swap -> in effect)", summary(mounted)))
        b.stop()
        import subprocess

        from raibid_agent.settings_source import POLL_SECONDS

        watcher = subprocess.Popen([sys.executable, "-c", RAW_WATCHER, str(b.settings_dir), b.server.url,
                                    b.server.password, str(POLL_SECONDS)])
        try:
            raw = _measure_raw(client, lambda text: kubelet_write(b.settings_dir, {c.SETTINGS_KEY: text}), args.changes)
        finally:
            watcher.terminate()
            watcher.wait(10)
        rows.append(("bare watcher (..data swap -> digest in Redis)", summary(raw)))

        if args.api:
            from kubernetes import client as k8s
            from kubernetes import config

            from raibid_gitops.devstack import processes

            kube = processes.start_kube(b.root / "kube")
            try:
                api = k8s.CoreV1Api(config.new_client_from_config(config_file=str(kube.kubeconfig)))
                ns = "raibid-bench"
                api.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))

                def cm(text: str):  # type: ignore[no-untyped-def]
                    return k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=c.SETTINGS_CONFIGMAP, namespace=ns),
                                           data={c.SETTINGS_KEY: text})

                api.create_namespaced_config_map(ns, cm(BENCH_SETTINGS))
                b.agent("watcher", "--settings-configmap", "-n", ns, "--kubeconfig", str(kube.kubeconfig))
                b.wait_agents(["watcher"])
                watched = _measure(client, "watcher",
                                   lambda text: api.replace_namespaced_config_map(c.SETTINGS_CONFIGMAP, ns, cm(text)),
                                   args.changes)
                rows.append(("API watch (replace -> in effect)", summary(watched)))
            finally:
                kube.stop()

    rows.append(("kubelet volume sync bound (for reference)", "60-90 s (syncFrequency 60 s + ConfigMap cache TTL)"))
    side_by_side(f"Settings propagation, {args.changes} changes, target < 1 s", rows)
    out = [Row("settings propagation, mounted dir -> in effect (p50)", percentile(mounted, 50) * 1000,
               percentile(raw, 50) * 1000, "ms", "bare watcher polling ..data as often", target="< 1 s")]
    if args.api:
        out.append(Row("settings propagation, API watch -> in effect (p50)", percentile(watched, 50) * 1000, None,
                       "ms", "", target="< 1 s"))
    emit(out, args.json)


if __name__ == "__main__":
    main()
