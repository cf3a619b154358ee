"""init / render / verify / get / schema through the real CLI, git and kustomize."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_gitops import git_state

from raibid_gitops.devstack import versions
from raibid_gitops.gitops import kustomize, layout


def raibid(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raibid_gitops.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if ".git/" not in p.as_posix() + "/"
                  and not p.relative_to(root).as_posix().startswith(".git"))


class TestInit:
    def test_writes_commits_and_sets(self, tmp_path: Path):
        target = tmp_path / "cfg"
        r = raibid("gitops", "init", str(target), "--set", "agents.maxReplicas=6", "--set", "agents.gpus=1",
                   "--remote", "http://127.0.0.1:1/raibid/raibid-config.git")
        assert r.returncode == 0, r.stderr
        files = listing(target)
        for rel in ("base/kustomization.yaml", layout.SETTINGS_PATH, layout.SCHEMA_PATH, layout.GPU_PATCH_PATH,
                    "clusters/dgx-spark/gitrepository.yaml", "clusters/dgx-spark/sync.yaml", "README.md"):
            assert rel in files
        head, status = git_state(target)
        assert len(head) == 40 and status == ""
        msg = subprocess.run(["git", "log", "-1", "--format=%B"], cwd=target, capture_output=True, text=True).stdout
        assert "Raibid-Set: agents.maxReplicas=6" in msg
        remote = subprocess.run(["git", "remote", "get-url", "origin"], cwd=target, capture_output=True, text=True)
        assert remote.stdout.strip() == "http://127.0.0.1:1/raibid/raibid-config.git"
        assert "maxReplicas: 6\n" in (target / layout.SETTINGS_PATH).read_text()
        assert 'value: 6 # {"$raibid": "agents.maxReplicas"}' in (target / layout.OVERLAY_DIR / "agent-scaledjob-patch.yaml").read_text()
        assert raibid("gitops", "verify", str(target)).returncode == 0

    def test_refuses_non_empty_dir_and_writes_nothing(self, tmp_path: Path):
        target = tmp_path / "cfg"
        target.mkdir()
        (target / "keep.txt").write_text("mine")
        r = raibid("gitops", "init", str(target))
        assert r.returncode == 2 and "is not empty" in r.stderr and "--force" in r.stderr
        assert listing(target) == ["keep.txt"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg"], "no staging directory left behind"

    def test_force_replaces(self, tmp_path: Path):
        target = tmp_path / "cfg"
        target.mkdir()
        (target / "old.txt").write_text("x")
        assert raibid("gitops", "init", str(target), "--force").returncode == 0
        assert "old.txt" not in listing(target)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg"]

    @pytest.mark.parametrize("assignment,words", [
        ("agents.maxReplicas=40", "cluster.capacity.cpu"),
        ("agents.minReplicas=9", "agents.maxReplicas"),
        ("agents.maxReplica=4", "did you mean agents.maxReplicas"),
        ("agents.maxReplicas=many", "must be an integer"),
        ("flux.prune=on", "true or false"),
    ])
    def test_bad_set_writes_nothing(self, tmp_path: Path, assignment: str, words: str):
        target = tmp_path / "cfg"
        r = raibid("gitops", "init", str(target), "--set", assignment)
        assert r.returncode == 2 and words in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert not target.exists() and list(tmp_path.iterdir()) == []


class TestRender:
    def test_render_with_real_kustomize(self, config_repo: Path):
        r = raibid("gitops", "render", str(config_repo))
        assert r.returncode == 0, r.stderr
        objs = kustomize.parse(r.stdout)
        kinds = sorted(o["kind"] for o in objs)
        assert kinds.count("NetworkPolicy") == 4
        assert {"Namespace", "StatefulSet", "Service", "ScaledJob", "TriggerAuthentication", "ConfigMap",
                "ServiceAccount", "Role", "RoleBinding"} <= set(kinds)

    def test_render_flux_objects(self, config_repo: Path):
        r = raibid("gitops", "render", "--flux", str(config_repo))
        assert r.returncode == 0, r.stderr
        kinds = {(o["apiVersion"], o["kind"]) for o in kustomize.parse(r.stdout)}
        assert kinds == {("source.toolkit.fluxcd.io/v1", "GitRepository"),
                         ("kustomize.toolkit.fluxcd.io/v1", "Kustomization")}

    def test_pinned_kustomize_binary_builds_the_project_templates(self, project_root: Path):
        binary = versions.objects_dir() / versions.object_name(next(c for c in versions.COMPONENTS if c.name == "kustomize"))
        if not binary.exists():
            pytest.fail("kustomize is not built: run `raibid-devstack build`")
        out = subprocess.run([str(binary), "build", str(project_root / layout.OVERLAY_DIR)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "kind: ScaledJob" in out.stdout

    def test_missing_kustomize_is_a_clear_error(self, config_repo: Path, tmp_path: Path):
        # A PATH with python but neither kustomize nor kubectl.
        bindir = tmp_path / "bin"
        bindir.mkdir()
        (bindir / "python").symlink_to(sys.executable)
        r = raibid("gitops", "render", str(config_repo), env={"PATH": str(bindir)})
        assert r.returncode == 2
        assert "neither kustomize nor kubectl is on PATH" in r.stderr and "Traceback" not in r.stderr

    def test_build_failure_is_reported(self, config_repo: Path):
        (config_repo / "base" / "kustomization.yaml").write_text(
            (config_repo / "base" / "kustomization.yaml").read_text().replace("redis.yaml", "missing.yaml"))
        r = raibid("gitops", "render", str(config_repo))
        assert r.returncode == 2 and "kustomize build" in r.stderr and "missing.yaml" in r.stderr


class TestVerify:
    def test_clean_repo_verifies(self, config_repo: Path):
        r = raibid("gitops", "verify", str(config_repo), "-o", "json")
        assert r.returncode == 0, r.stdout + r.stderr
        data = json.loads(r.stdout)
        assert data["ok"] and data["markedFields"] >= 25 and data["objects"] == 16

    def test_hand_edited_marked_field_is_caught(self, config_repo: Path):
        patch = config_repo / layout.OVERLAY_DIR / "agent-scaledjob-patch.yaml"
        patch.write_text(patch.read_text().replace('value: 8 # {"$raibid": "agents.maxReplicas"}',
                                                   'value: 12 # {"$raibid": "agents.maxReplicas"}'))
        r = raibid("gitops", "verify", str(config_repo))
        assert r.returncode == 1
        line = next(i for i, l in enumerate(patch.read_text().splitlines(), 1) if "value: 12" in l)
        assert (f"overlays/dgx-spark/agent-scaledjob-patch.yaml:{line}: /spec/maxReplicaCount: "
                "differs from agents.maxReplicas") in r.stdout
        assert "(expected 8, found 12)" in r.stdout

    def test_settings_edit_without_manifests_is_caught(self, config_repo: Path):
        s = config_repo / layout.SETTINGS_PATH
        s.write_text(s.read_text().replace("lagCount: 1\n", "lagCount: 4\n"))
        r = raibid("gitops", "verify", str(config_repo))
        assert r.returncode == 1
        assert '/spec/triggers/0/metadata/lagCount: differs from scaling.lagCount' in r.stdout
        assert '(expected "4", found "1")' in r.stdout

    def test_invalid_settings_listed(self, config_repo: Path):
        s = config_repo / layout.SETTINGS_PATH
        s.write_text(s.read_text().replace("  minReplicas: 0\n", "  minReplicas: 9\n"))
        r = raibid("gitops", "verify", str(config_repo))
        assert r.returncode == 1 and "agents.minReplicas" in r.stdout and "settings.yaml:" in r.stdout

    def test_schema_violation_is_caught(self, config_repo: Path):
        sj = config_repo / "base" / "agent-scaledjob.yaml"
        sj.write_text(sj.read_text().replace("  pollingInterval: 10\n", "  pollingInterval: 10\n  pollingIntervall: 5\n"))
        r = raibid("gitops", "verify", str(config_repo))
        assert r.returncode == 1
        assert "ScaledJob/raibid-ci/raibid-agent" in r.stdout and "pollingIntervall" in r.stdout

    def test_stale_generated_file_is_caught(self, config_repo: Path):
        (config_repo / layout.GPU_PATCH_PATH).write_text("- op: test\n  path: /kind\n  value: ScaledJob\n")
        r = raibid("gitops", "verify", str(config_repo))
        assert r.returncode == 1 and "agent-gpu-patch.yaml" in r.stdout

    def test_not_a_config_repo(self, tmp_path: Path):
        r = raibid("gitops", "verify", str(tmp_path))
        assert r.returncode == 2 and "not inside a raibid config repository" in r.stderr


class TestGetAndSchema:
    def test_get_one_and_all(self, config_repo: Path):
        assert raibid("gitops", "get", "agents.maxReplicas", "-C", str(config_repo)).stdout == "8\n"
        data = json.loads(raibid("gitops", "get", "-o", "json", cwd=config_repo).stdout)
        assert data["queue"]["stream"] == "raibid:jobs"
        r = raibid("gitops", "get", "agents.maxReplica", "-C", str(config_repo))
        assert r.returncode == 2 and "did you mean agents.maxReplicas" in r.stderr

    def test_schema_is_json_and_matches_the_checked_in_file(self, project_root: Path):
        """The schema editors read is the checked-in overlays/dgx-spark/settings.schema.json:
        a settings model change without regenerating it is caught here (a config repo made by
        init would carry a fresh copy from the same generator, proving nothing)."""
        r = raibid("gitops", "schema")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["title"] == "raibid-ci settings.yaml"
        assert r.stdout == (project_root / layout.SCHEMA_PATH).read_text(), \
            "settings.schema.json is stale: raibid gitops schema > overlays/dgx-spark/settings.schema.json"

    def test_help_imports_no_heavy_library(self):
        code = ("import sys; from raibid_gitops.cli import build_parser; build_parser().format_help();"
                "heavy = [m for m in ('pydantic','ruamel','git','kubernetes','redis','requests','textual','jsonschema')"
                " if m in sys.modules]; print(heavy)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_project_templates_verify(project_root: Path):
    """The shipped templates are themselves a valid config repository with default settings,
    including a current settings.schema.json and GPU patch."""
    r = raibid("gitops", "verify", str(project_root))
    assert r.returncode == 0, r.stdout + r.stderr
