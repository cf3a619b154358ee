"""The render cache (kustomize builds and schema verdicts kept in .git/raibid/cache): a hit
gives what kustomize and the schemas would, and every change of what a build depends on is a
miss — a changed tree, a changed kustomize binary, a corrupt entry, changed schemas."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_gitops import PROJECT_ROOT

from raibid_gitops.gitops import kustomize, layout, rendercache
from raibid_gitops.gitops.change import set_settings
from raibid_gitops.gitops.verify import verify


@pytest.fixture
def counted_kustomize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """RAIBID_KUSTOMIZE: a wrapper that logs each build's directory, then runs the real one.
    Returns the log file."""
    real = kustomize.command()
    log = tmp_path / "kustomize.log"
    wrapper = tmp_path / "bin" / "kustomize-counted"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$2" >> {shlex.quote(str(log))}\nexec {shlex.join(real)} "$2"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("RAIBID_KUSTOMIZE", str(wrapper))
    log.write_text("")
    return log


@pytest.fixture
def repo(tmp_path: Path, counted_kustomize: Path) -> Path:
    """A config repository made with the counted kustomize (so init's builds are in its cache)."""
    from raibid_gitops.gitops.generate import init

    path = init(tmp_path / "config").path
    counted_kustomize.write_text("")
    return path


def builds(log: Path) -> list[str]:
    return [Path(line).name for line in log.read_text().splitlines()]


def cache_dir(repo: Path) -> Path:
    return repo / ".git" / rendercache.CACHE_DIR


def report_data(repo: Path) -> dict:
    report = verify(repo)
    return {"problems": [p.to_dict() for p in report.problems], "objects": report.objects,
            "fields": report.checked_fields, "hash": report.settings.hash() if report.settings else None}


class TestBuildCache:
    def test_hit_is_what_kustomize_gives(self, repo: Path, counted_kustomize: Path) -> None:
        first = report_data(repo)
        assert builds(counted_kustomize) == []  # init built both: verify reads them from the cache
        for entry in (cache_dir(repo) / "builds").glob("*.json"):
            entry.unlink()
        (cache_dir(repo) / "verdicts.json").unlink()
        assert report_data(repo) == first
        assert sorted(builds(counted_kustomize)) == ["dgx-spark", "dgx-spark"]  # overlay and clusters
        # And the text `render` prints is kustomize's, byte for byte.
        for rel in (layout.OVERLAY_DIR, layout.CLUSTER_DIR):
            build = rendercache.build_all([repo / rel], objects=False)[0]
            assert build.cached and build.text == kustomize.build(repo / rel)

    def test_changed_tree_rebuilds_what_it_feeds(self, repo: Path, counted_kustomize: Path) -> None:
        base = repo / "base" / "namespace.yaml"
        base.write_text(base.read_text().replace("warn: restricted", "warn: baseline"))
        data = report_data(repo)
        assert builds(counted_kustomize) == ["dgx-spark"]  # the overlay (reads base/); clusters/ did not change
        ns = next(o for o in data["objects"] if o["kind"] == "Namespace")
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/warn"] == "baseline"
        counted_kustomize.write_text("")
        (repo / "base" / "new-file.txt").write_text("not referenced, but in the directory")
        report_data(repo)
        assert builds(counted_kustomize) == ["dgx-spark"]  # any file of a read directory counts

    def test_changed_binary_rebuilds(self, repo: Path, counted_kustomize: Path) -> None:
        wrapper = Path(os.environ["RAIBID_KUSTOMIZE"])
        wrapper.write_text(wrapper.read_text() + "# a new build of the binary\n")
        counted_kustomize.write_text("")
        report_data(repo)
        assert len(builds(counted_kustomize)) == 2

    def test_corrupt_entries_are_misses(self, repo: Path, counted_kustomize: Path) -> None:
        first = report_data(repo)
        entries = sorted((cache_dir(repo) / "builds").glob("*.json"))
        assert len(entries) == 2  # overlay and clusters
        entries[0].write_text("{not json")
        entries[1].write_text(json.dumps({"format": rendercache.FORMAT, "text": 12}))
        (cache_dir(repo) / "verdicts.json").write_bytes(b"\xff\xfe garbage")
        counted_kustomize.write_text("")
        assert report_data(repo) == first
        assert len(builds(counted_kustomize)) == 2
        for entry in entries:  # written again, whole
            assert json.loads(entry.read_text())["format"] == rendercache.FORMAT

    def test_uncacheable_builds_are_not_cached(self, tmp_path: Path) -> None:
        from raibid_gitops.clients.git import Repo

        Repo.init(tmp_path / "r")
        d = tmp_path / "r" / "k"
        d.mkdir()
        cmd = kustomize.command()
        (d / "kustomization.yaml").write_text("resources:\n  - https://example.invalid/x.yaml\n")
        assert rendercache.build_key(d, cmd) is None
        (d / "kustomization.yaml").write_text("resources:\n  - ../../outside\n")
        assert rendercache.build_key(d, cmd) is None
        (d / "kustomization.yaml").write_text("helmCharts:\n  - name: x\n")
        assert rendercache.build_key(d, cmd) is None
        (d / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
        (d / "kustomization.yaml").write_text("resources:\n  - cm.yaml\n")
        assert rendercache.build_key(d, cmd) is not None
        (d / "link.yaml").symlink_to(d / "cm.yaml")
        assert rendercache.build_key(d, cmd) is None
        (d / "link.yaml").unlink()
        (d / "kustomization.yml").write_text("resources: []\n")  # two kustomization files
        assert rendercache.build_key(d, cmd) is None

    def test_failed_builds_are_not_cached(self, repo: Path, counted_kustomize: Path) -> None:
        patch = repo / layout.OVERLAY_DIR / "rbac-patch.yaml"
        patch.write_text(patch.read_text() + "\n  this: [is, not\n")
        for _ in range(2):
            problems = [p for p in verify(repo).problems if p.field == "(kustomize build)"]
            assert problems and problems[0].file == layout.OVERLAY_DIR
        assert builds(counted_kustomize) == ["dgx-spark", "dgx-spark"]  # the overlay, each time


class TestVerdicts:
    def test_cached_problems_equal_fresh_ones(self, repo: Path, counted_kustomize: Path) -> None:
        ns = repo / "base" / "namespace.yaml"
        ns.write_text(ns.read_text() + "spec:\n  finalizers: notalist\nbogus: 1\n")
        fresh = report_data(repo)
        # verify places schema problems at the source line that wrote the field ...
        schema_problems = [p for p in fresh["problems"] if p["field"].startswith("Namespace/raibid-ci ")]
        assert len(schema_problems) >= 2, fresh["problems"]
        assert all(p["file"] == "base/namespace.yaml" and p["line"] for p in schema_problems), schema_problems
        assert report_data(repo) == fresh
        # ... so those are judged again each time (a comment added above them moves the line
        # without changing the rendered object); the valid objects' verdicts are remembered.
        known = json.loads((cache_dir(repo) / "verdicts.json").read_text())["verdicts"]
        assert known and not any(known.values())

    def test_schema_change_discards_verdicts(self, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        calls = []
        from raibid_gitops.gitops import schemas

        real = schemas.validate_object
        monkeypatch.setattr(schemas, "validate_object",
                            lambda obj, src, locate=None: calls.append(1) or real(obj, src, locate))
        report_data(repo)
        assert calls == []  # every verdict known
        monkeypatch.setattr(rendercache, "schema_identity", lambda: "other schemas")
        report_data(repo)
        assert len(calls) == 19


class TestSet:
    def test_set_builds_only_what_changed(self, repo: Path, counted_kustomize: Path) -> None:
        set_settings(["agents.maxReplicas=5"], repo=repo)
        # init seeded the cache: the base comes from it, clusters/ did not change.
        assert builds(counted_kustomize) == ["dgx-spark"]
        assert sorted(Path(p).parent.name for p in counted_kustomize.read_text().splitlines()) == ["overlays"]

    def test_cli_render_matches_kustomize(self, repo: Path) -> None:
        for flags, rel in (((), layout.OVERLAY_DIR), (("--flux",), layout.CLUSTER_DIR)):
            for _ in range(2):  # a miss, then a hit
                out = subprocess.run([sys.executable, "-m", "raibid_gitops.cli", "gitops", "render", *flags,
                                      str(repo)], capture_output=True, text=True, check=True,
                                     cwd=PROJECT_ROOT).stdout
                assert out == kustomize.build(repo / rel)


class TestReports:
    """`raibid gitops verify` answers an unchanged repository from its last report."""

    @staticmethod
    def summary(report) -> dict:  # type: ignore[no-untyped-def]
        return {"problems": [p.to_dict() for p in report.problems], "objects": report.objects,
                "fields": report.checked_fields, "hash": report.to_dict()["settingsHash"], "ok": report.ok}

    def test_unchanged_repo_from_cache(self, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from raibid_gitops.gitops import verify as verify_mod

        first = self.summary(verify_mod.verify_cached(repo))
        assert first == self.summary(verify(repo))

        def no_verify(*_a, **_k):  # type: ignore[no-untyped-def]
            raise AssertionError("verify ran although nothing changed")

        monkeypatch.setattr(verify_mod, "verify", no_verify)
        assert self.summary(verify_mod.verify_cached(repo)) == first

    @pytest.mark.parametrize("change", ["settings", "marked", "generated", "code", "tool", "corrupt"])
    def test_any_change_verifies_again(self, repo: Path, counted_kustomize: Path, monkeypatch: pytest.MonkeyPatch,
                                       change: str) -> None:
        from raibid_gitops.gitops import verify as verify_mod

        verify_mod.verify_cached(repo)
        if change == "settings":
            path = repo / layout.SETTINGS_PATH
            path.write_text(path.read_text().replace("maxReplicas: 8", "maxReplicas: 7"))
        elif change == "marked":
            path = repo / layout.CLUSTER_DIR / "sync.yaml"
            path.write_text(path.read_text().replace("interval: 1m", "interval: 2m", 1))
        elif change == "generated":
            (repo / layout.SCHEMA_PATH).unlink()
        elif change == "code":
            monkeypatch.setattr(rendercache, "_code_identity", lambda: "another version")
        elif change == "tool":
            wrapper = Path(os.environ["RAIBID_KUSTOMIZE"])
            wrapper.write_text(wrapper.read_text() + "# rebuilt\n")
        else:
            for entry in (cache_dir(repo) / "reports").glob("*.json"):
                entry.write_text('{"format": 1, "report": {"problems": "x"}}')
        calls: list[int] = []
        real = verify_mod.verify
        monkeypatch.setattr(verify_mod, "verify", lambda *a, **k: calls.append(1) or real(*a, **k))
        got = self.summary(verify_mod.verify_cached(repo))
        assert calls == [1]
        monkeypatch.setattr(verify_mod, "verify", real)
        assert got == self.summary(verify(repo))
        if change in ("settings", "marked", "generated"):
            assert not got["ok"]  # each of these edits is a problem verify reports

    def test_failing_report_from_cache_is_the_same(self, repo: Path) -> None:
        from raibid_gitops.gitops import verify as verify_mod

        path = repo / layout.OVERLAY_DIR / "agent-scaledjob-patch.yaml"
        path.write_text(path.read_text().replace("value: 8 #", "value: 9 #"))
        fresh = self.summary(verify_mod.verify_cached(repo))
        assert not fresh["ok"] and fresh["problems"]
        assert self.summary(verify_mod.verify_cached(repo)) == fresh


class TestPrefetch:
    """set's head start (prefetch.py): its build is used only where it is the same build."""

    @staticmethod
    def leftovers() -> set[str]:
        import tempfile

        return {p.name for p in Path(tempfile.gettempdir()).glob("raibid-prefetch-*")}

    def test_set_takes_the_head_start(self, repo: Path, counted_kustomize: Path) -> None:
        before = self.leftovers()
        result = set_settings(["agents.maxReplicas=5", "scaling.pollingInterval=7"], repo=repo)
        built = counted_kustomize.read_text().splitlines()
        assert len(built) == 1 and "raibid-prefetch-" in built[0], built  # the only build, done ahead
        overlay = rendercache.build_all([repo / layout.OVERLAY_DIR])[0]
        assert overlay.cached and overlay.text == kustomize.build(repo / layout.OVERLAY_DIR)
        assert [c.key for c in result.changes] == ["agents.maxReplicas", "scaling.pollingInterval"]
        assert self.leftovers() <= before

    def test_missed_prediction_builds_for_real(self, repo: Path, counted_kustomize: Path) -> None:
        # The model normalises gitea.url (no trailing slash): the prediction keeps the slash.
        set_settings(["gitea.url=http://gitea.example:3000/"], repo=repo)
        built = counted_kustomize.read_text().splitlines()
        assert any(str(repo) in line for line in built), built
        assert verify(repo).ok

    def test_failed_head_start_reports_the_real_place(self, repo: Path, counted_kustomize: Path) -> None:
        from raibid_gitops.errors import VerifyFailed

        patch = repo / layout.OVERLAY_DIR / "rbac-patch.yaml"
        patch.write_text(patch.read_text() + "\n  broken: [\n")
        subprocess.run(["git", "commit", "-qam", "broken"], cwd=repo, check=True,
                       env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
                            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"})
        with pytest.raises(VerifyFailed) as err:
            set_settings(["agents.maxReplicas=5"], repo=repo)
        text = str(err.value)
        # Built again in place: the overlay and the file named as the repository has them.
        assert f"{layout.OVERLAY_DIR}: (kustomize build)" in text and "rbac-patch.yaml" in text, text
        assert "raibid-prefetch-" not in text
