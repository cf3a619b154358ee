"""`raibid gitops diff` against the real stack: server-side dry-run against live objects, drift
made with kubectl, and the exit codes 0 (no change) / 1 (changes) / >1 (error)."""

from __future__ import annotations

import json
import subprocess

import pytest
import test_sync_stack
from test_sync_stack import FluxEnv, run

from raibid_gitops.gitops.layout import SETTINGS_PATH

pytestmark = pytest.mark.stack

#: The per-test Gitea repository + Flux objects of test_sync_stack.
flux_env = test_sync_stack.flux_env


def kubectl(env: FluxEnv, *args: str) -> str:
    return subprocess.run(["kubectl", "--kubeconfig", env.kubeconfig, *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout


class TestDiff:
    """What `diff` reports, and its exit codes."""

    def test_no_change_after_sync(self, flux_env: FluxEnv, capsys: pytest.CaptureFixture[str]) -> None:
        rc, out, err = run(flux_env.cli("diff", "--ks", flux_env.name), capsys)
        assert rc == 0, out + err
        assert "no change" in out
        rc, out, _ = run(flux_env.cli("diff", "--ks", flux_env.name, "--ref", "HEAD"), capsys)
        assert rc == 0 and "HEAD (" in out

    def test_drift_made_with_kubectl_is_detected(self, flux_env: FluxEnv, capsys: pytest.CaptureFixture[str]) -> None:
        ns = flux_env.workload_ns
        kubectl(flux_env, "-n", ns, "scale", "statefulset", "raibid-redis", "--replicas=3")
        kubectl(flux_env, "-n", ns, "patch", "configmap", "raibid-settings", "--type", "merge",
                "-p", json.dumps({"data": {"settings.yaml": "hand: edited\n"}}))
        # A label the manifests do not set is not drift: Flux would leave it alone.
        kubectl(flux_env, "-n", ns, "label", "serviceaccount", "raibid-agent", "owner=someone")
        rc, out, err = run(flux_env.cli("diff", "--ks", flux_env.name, "--ref", "HEAD"), capsys)
        assert rc == 1, err
        assert f"StatefulSet/{ns}/raibid-redis:" in out
        assert "spec.replicas: 3 (live) → 1" in out
        assert f"ConfigMap/{ns}/raibid-settings:" in out and "hand: edited (live)" in out
        assert "ServiceAccount" not in out
        rc, out, _ = run(flux_env.cli("diff", "--ks", flux_env.name, "--ref", "HEAD", "-o", "json"), capsys)
        data = json.loads(out)
        assert rc == 1 and data["changed"] is True
        sts = next(c for c in data["changes"] if c["object"].startswith("StatefulSet/"))
        assert sts["fields"] == [{"field": "spec.replicas", "live": 3, "desired": 1}]

    def test_working_tree_change_is_a_change(self, flux_env: FluxEnv, capsys: pytest.CaptureFixture[str]) -> None:
        path = flux_env.repo / SETTINGS_PATH
        path.write_text(path.read_text().replace("heartbeatSeconds: 15", "heartbeatSeconds: 20"))
        rc, out, _ = run(flux_env.cli("diff", "--ks", flux_env.name), capsys)
        assert rc == 1
        assert "heartbeatSeconds: 15 (live) → heartbeatSeconds: 20" in out
        # The committed HEAD still matches the cluster.
        rc, _, _ = run(flux_env.cli("diff", "--ks", flux_env.name, "--ref", "HEAD"), capsys)
        assert rc == 0

    def test_removed_object_would_be_pruned(self, flux_env: FluxEnv, capsys: pytest.CaptureFixture[str]) -> None:
        from raibid_gitops.gitops.layout import OVERLAY_DIR

        kz = flux_env.repo / "base" / "kustomization.yaml"
        text = kz.read_text()
        assert "trigger-authentication.yaml" in text
        kz.write_text(text.replace("  - trigger-authentication.yaml\n", ""))
        assert (flux_env.repo / OVERLAY_DIR).is_dir()
        rc, out, _ = run(flux_env.cli("diff", "--ks", flux_env.name), capsys)
        assert rc == 1
        assert f"TriggerAuthentication/{flux_env.workload_ns}/raibid-redis: would be pruned" in out

    def test_errors_exit_above_one(self, flux_env: FluxEnv, capsys: pytest.CaptureFixture[str]) -> None:
        rc, _, err = run(flux_env.cli("diff", "--ks", flux_env.name, "--ref", "no-such-ref"), capsys)
        assert rc == 2 and "'no-such-ref' is not a commit" in err
        rc, _, err = run(["gitops", "diff", "-C", str(flux_env.repo), "--kubeconfig", "/nonexistent/kubeconfig"],
                         capsys)
        assert rc == 2 and "kubeconfig /nonexistent/kubeconfig does not exist" in err
