"""`raibid gitops status` against the real stack: Flux's view and whether HEAD is applied."""

from __future__ import annotations

import json

import pytest
import test_sync_stack
from test_sync_stack import FluxEnv, _git, run

from raibid_gitops.gitops.layout import OVERLAY_DIR

pytestmark = pytest.mark.stack

#: The per-test Gitea repository + Flux objects of test_sync_stack.
flux_env = test_sync_stack.flux_env


class TestStatus:
    """Rows per GitRepository and Kustomization; HEAD applied, pending or FAILED."""

    def _rows(self, env: FluxEnv, capsys: pytest.CaptureFixture[str], expect_rc: int = 0) -> dict[str, dict]:
        rc, out, err = run(env.cli("status", "-o", "json"), capsys)
        assert rc == expect_rc, err
        data = json.loads(out)
        assert data["head"] == env.head()
        return {o["kind"]: o for o in data["objects"]}

    def test_head_applied(self, flux_env: FluxEnv, capsys: pytest.CaptureFixture[str]) -> None:
        rows = self._rows(flux_env, capsys)
        assert rows["Kustomization"]["head"] == "applied"
        assert rows["Kustomization"]["ready"] == "True"
        assert rows["GitRepository"]["revision"] == f"main@sha1:{flux_env.head()}"
        rc, out, _ = run(flux_env.cli("status"), capsys)
        assert rc == 0
        header = out.splitlines()[0].split()
        assert header == ["NAME", "REVISION", "SUSPENDED", "READY", "REASON", "MESSAGE", "HEAD"]
        assert f"kustomization/{flux_env.name}" in out

    def test_unpushed_commit_pending(self, flux_env: FluxEnv, capsys: pytest.CaptureFixture[str]) -> None:
        flux_env.commit_setting("heartbeatSeconds: 15", "heartbeatSeconds: 20")
        assert self._rows(flux_env, capsys)["Kustomization"]["head"] == "pending"

    def test_failing_new_commit_stands_out(self, flux_env: FluxEnv, capsys: pytest.CaptureFixture[str]) -> None:
        kz = flux_env.repo / OVERLAY_DIR / "kustomization.yaml"
        kz.write_text(kz.read_text().replace("  - ../../base\n", "  - ../../base\n  - missing-patch.yaml\n"))
        _git(flux_env.repo, "commit", "-qam", "broken")
        rc, _, _ = run(flux_env.sync("--no-verify", "--timeout", "60s"), capsys)
        assert rc == 1
        rows = self._rows(flux_env, capsys, expect_rc=1)  # not Ready: status exits 1
        ks = rows["Kustomization"]
        assert ks["head"] == "FAILED" and ks["failingNewCommit"] is True and ks["reason"] == "BuildFailed"
        rc, out, _ = run(flux_env.cli("status"), capsys)
        assert (f"! Kustomization {flux_env.flux_ns}/{flux_env.name}: main@sha1:{flux_env.head()[:12]} "
                "failed (BuildFailed)") in out

    def test_all_namespaces(self, flux_env: FluxEnv, capsys: pytest.CaptureFixture[str]) -> None:
        rc, out, _ = run(flux_env.cli("status", "-A"), capsys)
        _, data, _ = run(flux_env.cli("status", "-A", "-o", "json"), capsys)
        everything_ready = all(o["ready"] == "True" for o in json.loads(data)["objects"])
        assert rc == (0 if everything_ready else 1)
        assert out.splitlines()[0].startswith("NAMESPACE")
        assert any(line.startswith(flux_env.flux_ns) for line in out.splitlines())


class TestWatchList:
    """`status --watch` is fed by Kube.watch_list: a list, then a snapshot per change."""

    @pytest.mark.timeout(60)  # the loop below ends only on the event it waits for
    def test_snapshot_after_a_change(self, flux_env: FluxEnv) -> None:
        from raibid_gitops.gitops import flux

        snapshots = flux_env.kube.watch_list(flux.KUSTOMIZE_API, flux.KUSTOMIZATION, flux_env.flux_ns, chunk=5)
        first = next(snapshots)
        assert [o["metadata"]["name"] for o in first.values()] == [flux_env.name]
        flux_env.kube.annotate(flux_env.ks_ref, {"raibid.test/mark": "1"})
        for snap in snapshots:
            (obj,) = snap.values()
            if (obj["metadata"].get("annotations") or {}).get("raibid.test/mark") == "1":
                break
        snapshots.close()
