"""Settings propagation: a ConfigMap update -> a running agent applies it (target: under 1 s).

Measured until the agent's heartbeat reports the new settings hash (the agent pushes its
heartbeat at once on a change), i.e. the change is *in effect*, not only written.

- mounted directory: the update is made the way kubelet makes it (atomic ``..data`` swap);
  this measures the agent's part only. In a cluster, kubelet itself first takes up to its
  sync period plus its ConfigMap cache TTL (60-90 s with defaults) to rewrite the volume;
- API watch (``--api``): the ConfigMap is replaced through a real kube-apiserver (the devstack's
  etcd + kube-apiserver, started here; needs `raibid-devstack build`) and the agent, started
  with ``--settings-configmap``, is watching it. This is the end-to-end figure.

Usage: python benchmarks/settings_propagation.py [--changes 20] [--api]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_agents import BENCH_SETTINGS, bench, side_by_side, summary  # noqa: E402


def _version(i: int) -> str:
    # A harmless change per round: a different log cap gives a different settings hash.
    return BENCH_SETTINGS.replace("logMaxLen: 1000", f"logMaxLen: {1000 + i + 1}")


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
        time.sleep(0.2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--api", action="store_true", help="also measure through a real kube-apiserver watch")
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


if __name__ == "__main__":
    main()
