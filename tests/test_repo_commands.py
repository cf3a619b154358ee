"""init / render / verify / get / schema through the real CLI, git and kustomize."""

from __future__ import annotations

import json
import os
import shutil
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
                   "--set", "cluster.nodes.gpus=6",
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
        assert 'value: 6 # {"$raibid": "agents.maxReplicas"}' in \
            (target / layout.OVERLAY_DIR / "agent-scaledjob-patch.yaml").read_text()
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
                         ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
                         # push to apply (Receiver) and Flux's verdict as commit statuses
                         ("notification.toolkit.fluxcd.io/v1", "Receiver"),
                         ("notification.toolkit.fluxcd.io/v1beta3", "Provider"),
                         ("notification.toolkit.fluxcd.io/v1beta3", "Alert")}

    def test_pinned_kustomize_binary_builds_the_project_templates(self, project_root: Path):
        binary = versions.objects_dir() / versions.object_name(next(c for c in versions.COMPONENTS
                                                                    if c.name == "kustomize"))
        if not binary.exists():
            pytest.fail("kustomize is not built: run `raibid-devstack build`")
        out = subprocess.run([str(binary), "build", str(project_root / layout.OVERLAY_DIR)], capture_output=True,
                             text=True)
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
        assert data["ok"] and data["markedFields"] >= 25 and data["objects"] == 19

    def test_hand_edited_marked_field_is_caught(self, config_repo: Path):
        patch = config_repo / layout.OVERLAY_DIR / "agent-scaledjob-patch.yaml"
        patch.write_text(patch.read_text().replace('value: 8 # {"$raibid": "agents.maxReplicas"}',
                                                   'value: 12 # {"$raibid": "agents.maxReplicas"}'))
        r = raibid("gitops", "verify", str(config_repo))
        assert r.returncode == 1
        line = next(i for i, text in enumerate(patch.read_text().splitlines(), 1) if "value: 12" in text)
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
        sj.write_text(sj.read_text().replace("  pollingInterval: 10\n",
                                             "  pollingInterval: 10\n  pollingIntervall: 5\n"))
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


def _pinned_kustomize() -> Path:
    binary = versions.objects_dir() / versions.object_name(next(c for c in versions.COMPONENTS
                                                                if c.name == "kustomize"))
    if not binary.exists():
        pytest.fail("kustomize is not built: run `raibid-devstack build`")
    return binary


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


class TestVerifyBuildFailure:
    """Issue 17 item 10: a kustomize failure is one problem in kustomize's words, cleaned."""

    @pytest.mark.parametrize("tool", ["kubectl kustomize", "pinned kustomize"])
    def test_missing_resource_is_one_clean_problem(self, config_repo: Path, tool: str):
        env = {"RAIBID_KUSTOMIZE": str(_pinned_kustomize())} if tool == "pinned kustomize" else {}
        if tool == "kubectl kustomize" and (os.environ.get("RAIBID_KUSTOMIZE") or not shutil.which("kubectl")
                                            or shutil.which("kustomize")):
            pytest.fail("this test needs kubectl (and no kustomize) on PATH, as .ci/run installs them")
        kz = config_repo / "base" / "kustomization.yaml"
        kz.write_text(kz.read_text().replace("redis.yaml", "missing.yaml"))
        r = raibid("gitops", "verify", str(config_repo), env=env)
        assert r.returncode == 1
        lines = r.stdout.splitlines()
        assert len(lines) == 1, r.stdout  # no "renders no ConfigMap" restating the failure
        line = lines[0]
        assert line.startswith("overlays/dgx-spark: (kustomize build): accumulating resources from '../../base'")
        assert line.endswith("lstat base/missing.yaml: no such file or directory")
        assert line.count("no such file or directory") == 1, "the cause once"
        for noise in ("run.go", "E1", "command failed", "Error:", str(config_repo), "must build at directory"):
            assert noise not in line, noise
        data = json.loads(raibid("gitops", "verify", str(config_repo), "-o", "json", env=env).stdout)
        assert [p["field"] for p in data["problems"]] == ["(kustomize build)"]

    def test_unparsable_patch_is_one_line(self, config_repo: Path):
        (config_repo / layout.OVERLAY_DIR / "namespace-patch.yaml").write_text("- op: add\n  path: /x\n  value: [1\n")
        r = raibid("gitops", "verify", str(config_repo))
        assert r.returncode == 1
        (line,) = r.stdout.splitlines()
        assert "unable to parse SM or JSON patch" in line and "namespace-patch.yaml" in line

    def test_render_says_it_once_too(self, config_repo: Path):
        kz = config_repo / "base" / "kustomization.yaml"
        kz.write_text(kz.read_text().replace("redis.yaml", "missing.yaml"))
        r = raibid("gitops", "render", "-C", str(config_repo))
        assert r.returncode == 2
        assert r.stderr.startswith("error: kustomize build of overlays/dgx-spark failed: accumulating resources")
        assert r.stderr.count("no such file or directory") == 1 and "run.go" not in r.stderr


class TestKustomizeMessages:
    """The cleaning of kustomize's error text, on the exact output of the two tools (recorded)."""

    ROOT = Path("/tmp/t/cfg")
    CAUSE = ("evalsymlink failure on '/tmp/t/cfg/base/missing.yaml' : lstat /tmp/t/cfg/base/missing.yaml: "
             "no such file or directory")
    CHAIN = ("accumulating resources: accumulation err='accumulating resources from '../../base': "
             "'/tmp/t/cfg/base' must resolve to a file': recursed accumulation of path '/tmp/t/cfg/base': "
             "accumulating resources: accumulation err='accumulating resources from 'missing.yaml': "
             f"{CAUSE}': must build at directory: not a valid directory: {CAUSE}")
    EXPECTED = ("accumulating resources from '../../base': accumulating resources from 'missing.yaml': "
                "evalsymlink failure on 'base/missing.yaml' : lstat base/missing.yaml: no such file or directory")

    def test_kubectl_one_line_klog(self):
        raw = 'E1130 09:41:35.366212   17058 run.go:72] "command failed" err="' + self.CHAIN + '"\n'
        assert kustomize.clean_error(raw, self.ROOT) == self.EXPECTED

    def test_kustomize_error_prefix(self):
        assert kustomize.clean_error("Error: " + self.CHAIN + "\n", self.ROOT) == self.EXPECTED

    def test_kubectl_multi_line_klog(self):
        raw = ('E1130 09:44:03.531044   29554 run.go:72] "command failed" err=<\n'
               "\ttrouble configuring builtin PatchTransformer with config: `\n\tpath: p.yaml\n\t`: "
               'unable to parse SM or JSON patch from [path: "p.yaml"]\n >\n')
        assert kustomize.clean_error(raw) == ("trouble configuring builtin PatchTransformer with config: ` "
                                              'path: p.yaml `: unable to parse SM or JSON patch from [path: "p.yaml"]')

    def test_unknown_text_is_kept(self):
        assert kustomize.clean_error("something new: went wrong\n") == "something new: went wrong"


class TestSchemaProblemsHaveFileAndLine:
    """Issue 17 item 10: a schema error names the source file and line that wrote the field."""

    def test_fields_from_resources_and_patches(self, config_repo: Path):
        overlay = config_repo / layout.OVERLAY_DIR
        redis = config_repo / "base" / "redis.yaml"
        redis.write_text(redis.read_text().replace("replicas: 1", "replicas: one", 1))
        sj = config_repo / "base" / "agent-scaledjob.yaml"
        sj.write_text(sj.read_text().replace("  pollingInterval: 10\n",
                                             "  pollingInterval: 10\n  pollingIntervall: 5\n"))
        patch = overlay / "agent-scaledjob-patch.yaml"
        patch.write_text(patch.read_text() + "- op: add\n  path: /spec/jobTargetRef/backoffLimit\n  value: many\n")
        # A strategic-merge patch (no target: it names its object), in a list matched by name.
        (overlay / "redis-smp.yaml").write_text(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: raibid-redis\nspec:\n  template:\n"
            "    spec:\n      containers:\n        - name: redis\n          stdin: maybe\n")
        kz = overlay / "kustomization.yaml"
        kz.write_text(kz.read_text() + "  - path: redis-smp.yaml\n")
        r = raibid("gitops", "verify", str(config_repo))
        assert r.returncode == 1, r.stdout + r.stderr
        out = r.stdout
        assert (f"base/redis.yaml:{_line_of(redis, 'replicas: one')}: StatefulSet/raibid-ci/raibid-redis "
                "spec.replicas: 'one' is not of type 'integer'") in out
        assert (f"base/agent-scaledjob.yaml:{_line_of(sj, 'pollingIntervall')}: ScaledJob/raibid-ci/raibid-agent "
                "spec: Additional properties are not allowed ('pollingIntervall' was unexpected)") in out
        assert (f"overlays/dgx-spark/agent-scaledjob-patch.yaml:{_line_of(patch, 'value: many')}: "
                "ScaledJob/raibid-ci/raibid-agent spec.jobTargetRef.backoffLimit: "
                "'many' is not of type 'integer'") in out
        assert (f"overlays/dgx-spark/redis-smp.yaml:{_line_of(overlay / 'redis-smp.yaml', 'maybe')}: "
                "StatefulSet/raibid-ci/raibid-redis spec.template.spec.containers[0].stdin: "
                "'maybe' is not of type 'boolean'") in out
        problems = json.loads(raibid("gitops", "verify", str(config_repo), "-o", "json").stdout)["problems"]
        assert {(p["file"], p.get("line")) for p in problems} == {
            ("base/redis.yaml", _line_of(redis, "replicas: one")),
            ("base/agent-scaledjob.yaml", _line_of(sj, "pollingIntervall")),
            ("overlays/dgx-spark/agent-scaledjob-patch.yaml", _line_of(patch, "value: many")),
            ("overlays/dgx-spark/redis-smp.yaml", _line_of(overlay / "redis-smp.yaml", "maybe")),
        }

    def test_a_missing_required_field_points_at_its_mapping(self, config_repo: Path):
        rb = config_repo / "base" / "agent-rbac.yaml"
        text = rb.read_text()
        assert "roleRef:" in text
        rb.write_text(text.replace("roleRef:", "roleReff:", 1))
        r = raibid("gitops", "verify", str(config_repo))
        assert r.returncode == 1
        assert any(line.startswith("base/agent-rbac.yaml:") and "'roleRef' is a required property" in line
                   for line in r.stdout.splitlines()), r.stdout


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
