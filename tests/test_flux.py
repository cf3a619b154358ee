"""Pure unit tests of the Flux object helpers, status rows, diff normalization and the CLI's
duration parsing (no cluster)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest

from raibid_gitops.gitops import flux

SHA = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
SHA2 = "5a102be3a70207e5272e0956cb8b145689f0627b"


def ks(*, ready: str = "True", reason: str = "ReconciliationSucceeded", message: str = "ok",
       applied: str | None = f"main@sha1:{SHA}", attempted: str | None = f"main@sha1:{SHA}",
       generation: int = 1, observed: int = 1, suspend: bool = False, extra: list[dict[str, Any]] | None = None,
       handled: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": observed,
        "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message}, *(extra or [])],
    }
    if applied:
        status["lastAppliedRevision"] = applied
    if attempted:
        status["lastAttemptedRevision"] = attempted
    if handled:
        status["lastHandledReconcileAt"] = handled
    spec: dict[str, Any] = {"sourceRef": {"kind": "GitRepository", "name": "raibid-config"}}
    if suspend:
        spec["suspend"] = True
    return {"apiVersion": flux.KUSTOMIZE_API, "kind": "Kustomization",
            "metadata": {"name": "raibid-config", "namespace": "flux-system", "generation": generation},
            "spec": spec, "status": status}


class TestRevision:
    """Flux's revision strings in all the spellings controllers have used."""

    def test_v1_format(self) -> None:
        rev = flux.parse_revision(f"main@sha1:{SHA}")
        assert rev == flux.Revision("main", "sha1", SHA)
        assert rev.short == SHA[:12]
        assert str(rev) == f"main@sha1:{SHA}"

    def test_branch_with_slash_and_at(self) -> None:
        rev = flux.parse_revision(f"release/v1@sha1:{SHA}")
        assert rev is not None and rev.ref == "release/v1" and rev.digest == SHA

    def test_legacy_slash_format(self) -> None:
        assert flux.parse_revision(f"main/{SHA}") == flux.Revision("main", "sha1", SHA)

    def test_bare_digest_and_sha(self) -> None:
        assert flux.parse_revision(f"sha1:{SHA}") == flux.Revision(None, "sha1", SHA)
        assert flux.parse_revision(SHA) == flux.Revision(None, "sha1", SHA)

    def test_sha256_artifact(self) -> None:
        digest = "a" * 64
        assert flux.parse_revision(f"latest@sha256:{digest}") == flux.Revision("latest", "sha256", digest)

    @pytest.mark.parametrize("text", [None, "", "main", "main@md5:zz", "not a revision"])
    def test_unreadable(self, text: str | None) -> None:
        assert flux.parse_revision(text) is None

    def test_format_shortens(self) -> None:
        assert flux.format_revision(f"main@sha1:{SHA}") == f"main@sha1:{SHA[:12]}"
        assert flux.format_revision("weird") == "weird"
        assert flux.format_revision(None) == ""


class TestConditions:
    """Ready / Reconciling / Stalled, failures versus progress, generations."""

    def test_ready(self) -> None:
        assert flux.is_ready(ks())
        assert not flux.is_ready(ks(ready="False", reason="BuildFailed"))

    def test_ready_needs_current_generation(self) -> None:
        assert not flux.is_ready(ks(generation=2, observed=1))
        assert not flux.generation_current(ks(generation=2, observed=1))

    def test_build_failed_is_failure(self) -> None:
        c = flux.failure(ks(ready="False", reason="BuildFailed", message="kustomize build failed: boom"))
        assert c is not None and c.reason == "BuildFailed" and "boom" in c.message

    @pytest.mark.parametrize("reason", ["Progressing", "ProgressingWithRetry", "DependencyNotReady"])
    def test_transient_reasons_are_not_failures(self, reason: str) -> None:
        assert flux.failure(ks(ready="False", reason=reason)) is None

    def test_unknown_is_not_failure(self) -> None:
        assert flux.failure(ks(ready="Unknown", reason="Progressing")) is None

    def test_stalled_is_failure(self) -> None:
        obj = ks(ready="Unknown", reason="Progressing",
                 extra=[{"type": "Stalled", "status": "True", "reason": "InvalidPath", "message": "no such path"}])
        c = flux.failure(obj)
        assert c is not None and c.type == "Stalled" and flux.is_stalled(obj)

    def test_reconciling(self) -> None:
        obj = ks(extra=[{"type": "Reconciling", "status": "True", "reason": "Progressing", "message": ""}])
        assert flux.is_reconciling(obj)

    def test_revisions(self) -> None:
        obj = ks(applied=f"main@sha1:{SHA}", attempted=f"main@sha1:{SHA2}")
        assert flux.applied_revision(obj) != flux.attempted_revision(obj)
        assert flux.revision(obj) == f"main@sha1:{SHA}"
        src = {"kind": "GitRepository", "status": {"artifact": {"revision": f"main@sha1:{SHA2}"}}}
        assert flux.revision(src) == flux.artifact_revision(src) == f"main@sha1:{SHA2}"

    def test_suspended(self) -> None:
        assert flux.is_suspended(ks(suspend=True)) and not flux.is_suspended(ks())


class TestRefsAndPatches:
    def test_source_ref_defaults_to_own_namespace(self) -> None:
        assert flux.source_ref(ks()) == ("GitRepository", "flux-system", "raibid-config")

    def test_depends_on(self) -> None:
        obj = ks()
        obj["spec"]["dependsOn"] = [{"name": "infra"}, {"name": "crds", "namespace": "other"}]
        assert flux.depends_on(obj) == [("flux-system", "infra"), ("other", "crds")]

    def test_request_token_is_rfc3339_nanos(self) -> None:
        t = flux.request_token(datetime(2026, 11, 28, 4, 5, 6, 123456, tzinfo=UTC))
        assert t == "2026-11-28T04:05:06.123456000Z"
        assert flux.reconcile_patch(t) == {"metadata": {"annotations": {flux.REQUESTED_AT: t}}}

    def test_suspend_and_resume_patches(self) -> None:
        assert flux.suspend_patch(True) == {"spec": {"suspend": True}}
        assert flux.suspend_patch(False) == {"spec": {"suspend": None}}

    def test_builders(self) -> None:
        gr = flux.git_repository("r", "ns", url="http://x/r.git", secret="auth", interval="10m")
        assert gr["spec"] == {"interval": "10m", "url": "http://x/r.git", "ref": {"branch": "main"},
                              "secretRef": {"name": "auth"}}
        k = flux.kustomization("k", "ns", source="r", depends=["a"])
        assert k["spec"]["sourceRef"] == {"kind": "GitRepository", "name": "r"}
        assert k["spec"]["dependsOn"] == [{"name": "a"}]


class TestStatusRows:
    """The status table: a failing new commit stands out."""

    def test_failing_new_commit_row_and_note(self) -> None:
        from raibid_gitops.gitops import status

        obj = ks(ready="False", reason="BuildFailed", message="kustomize build failed:\n  missing.yaml",
                 applied=f"main@sha1:{SHA}", attempted=f"main@sha1:{SHA2}")
        row = status.row_of(obj, None)
        assert row.failing_new_commit and row.reason == "BuildFailed"
        from raibid_gitops.cli.status_view import render_table

        out = io.StringIO()
        render_table([row], all_namespaces=False, color=False, head_sha=None, stream=out)
        text = out.getvalue()
        assert "kustomization/raibid-config" in text and "BuildFailed" in text
        assert f"! Kustomization flux-system/raibid-config: main@sha1:{SHA2[:12]} failed (BuildFailed)" in text
        assert "HEAD" not in text.splitlines()[0]

    def test_healthy_row(self) -> None:
        from raibid_gitops.gitops import status

        row = status.row_of(ks(), None)
        assert not row.failing_new_commit and row.ready == "True"
        assert row.to_dict()["lastAppliedRevision"] == f"main@sha1:{SHA}"


class TestDiffNormalize:
    def test_server_fields_ignored(self) -> None:
        from raibid_gitops.gitops import drift

        live = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "n", "uid": "1", "resourceVersion": "5",
                             "managedFields": [{"manager": "x"}], "creationTimestamp": "t"},
                "data": {"a": "1"}, "status": {"x": 1}}
        desired = {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "c", "namespace": "n", "uid": "1", "resourceVersion": "6"},
                   "data": {"a": "1"}}
        assert drift.field_diffs(live, desired) == ()
        desired["data"]["a"] = "2"
        (d,) = drift.field_diffs(live, desired)
        assert d.path == "data.a" and d.live == "1" and d.desired == "2"

    def test_flux_labels_added(self) -> None:
        from raibid_gitops.gitops import drift

        obj = drift.with_flux_labels({"metadata": {"name": "x"}}, "ks", "flux-system")
        assert obj["metadata"]["labels"] == {flux.OWNER_NAME_LABEL: "ks", flux.OWNER_NAMESPACE_LABEL: "flux-system"}

    def test_inventory_ids(self) -> None:
        from raibid_gitops.gitops import drift

        obj = {"status": {"inventory": {"entries": [{"id": "_t__Namespace", "v": "v1"},
                                                    {"id": "t_redis_apps_StatefulSet", "v": "v1"}]}}}
        assert drift._inventory(obj) == [("", "t", "", "Namespace", "v1"), ("t", "redis", "apps", "StatefulSet", "v1")]


class TestCli:
    @pytest.mark.parametrize("text,seconds", [("5m", 300), ("90s", 90), ("1m30s", 90), ("300", 300),
                                              ("500ms", 0.5), ("1h", 3600)])
    def test_duration(self, text: str, seconds: float) -> None:
        from raibid_gitops.cli.gitops_sync import duration

        assert duration(text) == seconds

    def test_bad_duration(self) -> None:
        import argparse

        from raibid_gitops.cli.gitops_sync import duration

        with pytest.raises(argparse.ArgumentTypeError):
            duration("5 minutes")

    def test_commands_registered(self) -> None:
        """Each command line reaches its own handler with the options parsed as given."""
        from raibid_gitops.cli import build_parser
        from raibid_gitops.cli import gitops_sync as cmds

        parser = build_parser()
        cases = [
            (["gitops", "sync", "--timeout", "2m", "--wait-agents"], cmds.cmd_sync,
             {"timeout": 120.0, "wait_agents": True, "kustomization": "raibid-config", "namespace": "flux-system"}),
            (["gitops", "status", "-A", "-o", "json"], cmds.cmd_status, {"all_namespaces": True, "output": "json"}),
            (["gitops", "diff", "--ref", "HEAD"], cmds.cmd_diff, {"ref": "HEAD"}),
            (["gitops", "suspend", "ks", "x", "-n", "ns"], cmds.cmd_suspend,
             {"kind": "ks", "name": "x", "namespace": "ns"}),
            (["gitops", "resume"], cmds.cmd_resume, {"kind": "kustomization", "name": "raibid-config"}),
        ]
        for argv, handler, expected in cases:
            args = parser.parse_args(argv)
            assert args.handler is handler, argv
            assert {k: getattr(args, k) for k in expected} == expected, argv

    def test_missing_kubeconfig_is_readable(self, tmp_path: Any) -> None:
        from raibid_gitops.clients import kube
        from raibid_gitops.errors import KubeError

        with pytest.raises(KubeError, match="does not exist"):
            kube.connect(str(tmp_path / "nope"))


class TestProgress:
    def test_lines_when_not_a_tty(self) -> None:
        from raibid_gitops.cli.progress import Progress

        out = io.StringIO()
        ticks = iter([0.0, 1.5, 3.25])
        p = Progress(out, clock=lambda: next(ticks))
        p.update("source", "waiting")
        p.update("source", "waiting")  # unchanged: not repeated
        p.done("source", "has main@sha1:abc")
        assert out.getvalue().splitlines() == ["[   1.5s] source  waiting", "[   3.2s] source  has main@sha1:abc"]
