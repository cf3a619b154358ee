"""`raibid gitops set` on local repositories (a bare repository as the remote): the commit, the
re-apply on a moved branch, conflicts, and bad input leaving everything as it was.
The same flows against the real Gitea are in test_change_gitea.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_gitops import git_state

from raibid_gitops.errors import (
    ChangeConflict,
    ConfigRepoError,
    VerifyFailed,
)
from raibid_gitops.gitops import layout
from raibid_gitops.gitops.change import (
    SUBJECT_MAX,
    SettingChange,
    branch_name,
    commit_message,
    commit_subject,
    format_value,
    parse_trailers,
    pr_body,
    set_settings,
)
from raibid_gitops.gitops.objdiff import diff_objects
from raibid_gitops.settings import load_path, load_text


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def raibid(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raibid_gitops.cli", *args], cwd=cwd, capture_output=True, text=True,
                          check=False)


@pytest.fixture
def remote_pair(config_repo: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A bare 'origin' holding config_repo's main, and two clones of it (two writers)."""
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(config_repo), str(bare)], check=True)
    clones = []
    for name in ("a", "b"):
        dst = tmp_path / name
        subprocess.run(["git", "clone", "--quiet", str(bare), str(dst)], check=True)
        clones.append(dst)
    return bare, clones[0], clones[1]


class TestMessage:
    def test_subject_body_trailers(self):
        msg = commit_message([SettingChange("agents.maxReplicas", 8, 12)], note="more builds on Fridays",
                             settings_hash="sha256:abc")
        subject, _, rest = msg.partition("\n\n")
        assert subject == "raibid: set agents.maxReplicas 8 → 12"
        assert rest.startswith("more builds on Fridays\n\nChanges to overlays/dgx-spark/settings.yaml:")
        assert "  agents.maxReplicas: 8 → 12\n" in rest
        assert msg.endswith("\n\nRaibid-Set: agents.maxReplicas=12\nRaibid-Settings-Hash: sha256:abc\n")
        assert parse_trailers(msg) == {"agents.maxReplicas": "12"}

    def test_long_subject_keeps_new_values_and_counts_the_rest(self):
        changes = [SettingChange("agents.maxReplicas", 8, 12), SettingChange("scaling.pollingInterval", 10, 30),
                   SettingChange("agents.image", "a", "gitea.example:3000/raibid/agent:0.2.0")]
        msg = commit_message(changes)
        subject = msg.splitlines()[0]
        assert subject == "raibid: set agents.maxReplicas=12, scaling.pollingInterval=30 (+1 more)"
        for c in changes:
            assert f"Raibid-Set: {c.key}={format_value(c.new)}\n" in msg and f"  {c.key}: " in msg


    def test_values_keep_their_spelling(self):
        msg = commit_message([SettingChange("flux.prune", True, False),
                              SettingChange("agents.defaultPipeline", [], [{"name": "t", "run": "make"}])])
        assert "Raibid-Set: flux.prune=false" in msg
        assert 'Raibid-Set: agents.defaultPipeline=[{"name":"t","run":"make"}]' in msg

    def test_branch_name_is_a_valid_ref(self, tmp_path: Path):
        name = branch_name([SettingChange("agents.image", "x", "reg:5000/a b/agent..x:1"),
                            SettingChange("agents.cpu", "2", "4")], "0123456789abcdef")
        assert name.startswith("raibid/set-agents.image-reg-5000-a-b-agent") and name.endswith("-and-1-more-01234567")
        assert subprocess.run(["git", "check-ref-format", f"refs/heads/{name}"], check=False).returncode == 0

    def test_pr_body_has_table_and_diff(self):
        old = [{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "metadata": {"name": "a", "namespace": "n"},
                "spec": {"maxReplicaCount": 8}}]
        new = [{**old[0], "spec": {"maxReplicaCount": 12}}]
        body = pr_body([SettingChange("agents.maxReplicas", 8, 12)], diff_objects(old, new), "f" * 40, "ok")
        assert "| `agents.maxReplicas` | `8` | `12` |" in body
        assert "ScaledJob/n/a:\n  spec.maxReplicaCount: 8 → 12" in body


class TestSubject:
    """The subject of every kind of value: the new value is always there, whole or visibly cut."""

    @pytest.mark.parametrize("old,new,expected", [
        (8, 12, "raibid: set agents.maxReplicas 8 → 12"),
        (True, False, "raibid: set flux.prune true → false"),
        ("4Gi", "6Gi", "raibid: set agents.memory 4Gi → 6Gi"),
        ("1m", "2m", "raibid: set flux.interval 1m → 2m"),
        ([], [{"name": "t", "run": "make"}], 'raibid: set agents.defaultPipeline [] → [{"name":"t","run":"make"}]'),
    ])
    def test_short_values_whole_with_old_and_new(self, old, new, expected):
        key = expected.split()[2]
        assert commit_subject([SettingChange(key, old, new)]) == expected

    def test_long_value_drops_the_old_one_first(self):
        old, new = "gitea.example:3000/raibid/agent:0.1.0", "gitea.example:3000/raibid/agent:0.2.0"
        assert commit_subject([SettingChange("agents.image", old, new)]) == f"raibid: set agents.image={new}"

    def test_too_long_value_is_cut_in_the_middle_with_a_mark(self):
        new = [{"name": "test", "run": "make test && make lint && make docs && make package"}]
        subject = commit_subject([SettingChange("agents.defaultPipeline", [], new)])
        assert len(subject) == SUBJECT_MAX and subject.count("…") == 1
        assert subject.startswith('raibid: set agents.defaultPipeline=[{"name":"test')
        assert subject.endswith('&& make package"}]')
        image = "gitea.raibid-ci.svc.cluster.local:3000/raibid/agent:0.2.0"
        subject = commit_subject([SettingChange("agents.image", "x", image)])
        assert subject.endswith("/raibid/agent:0.2.0"), "an image's tag survives the cut"

    def test_many_settings_say_how_many_more(self):
        changes = [SettingChange(f"scaling.{k}", 1, 2) for k in
                   ("pollingInterval", "lagCount", "activationLagCount", "successfulJobsHistoryLimit",
                    "failedJobsHistoryLimit")]
        subject = commit_subject(changes)
        assert len(subject) <= SUBJECT_MAX and subject.startswith("raibid: set scaling.pollingInterval=2, ")
        shown_n = subject.count("=2")
        assert subject.endswith(f"(+{len(changes) - shown_n} more)")

    def test_first_value_too_long_with_more_settings(self):
        changes = [SettingChange("agents.image", "a", "r" * 200), SettingChange("agents.gpus", 0, 1)]
        subject = commit_subject(changes)
        assert len(subject) <= SUBJECT_MAX and subject.endswith("r (+1 more)") and "r…r" in subject
        assert subject.startswith("raibid: set agents.image=rrrr")

    def test_a_newline_cannot_end_the_subject(self):
        subject = commit_subject([SettingChange("agents.image", "a", "b\nRaibid-Set: x=y")])
        assert "\n" not in subject and "b\\nRaibid-Set" in subject


class TestLocalSet:
    def test_commit_updates_settings_and_marked_fields_only(self, config_repo: Path):
        before = git(config_repo, "rev-parse", "HEAD")
        result = set_settings(["agents.maxReplicas=10", "scaling.lagCount=2"], repo=config_repo,
                              author=("Ops Person", "ops@example.invalid"))
        assert result.commit == git(config_repo, "rev-parse", "HEAD") and result.pushed_to is None
        assert git(config_repo, "rev-parse", "HEAD~1") == before
        assert git(config_repo, "status", "--porcelain") == ""
        assert git(config_repo, "log", "-1", "--format=%an <%ae>") == "Ops Person <ops@example.invalid>"
        changed = git(config_repo, "diff", "--name-only", "HEAD~1").splitlines()
        assert changed == [layout.OVERLAY_DIR + "/agent-scaledjob-patch.yaml", layout.SETTINGS_PATH]
        # Round trip: only the two value lines of settings.yaml differ.
        settings_diff = git(config_repo, "diff", "-U0", "HEAD~1", "--", layout.SETTINGS_PATH)
        assert [ln for ln in settings_diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")] == \
            ["-  maxReplicas: 8", "+  maxReplicas: 10", "-  lagCount: 1", "+  lagCount: 2"]
        s = load_path(config_repo / layout.SETTINGS_PATH)
        assert (s.agents.max_replicas, s.scaling.lag_count) == (10, 2)
        assert result.settings_hash == s.hash()
        assert raibid("gitops", "verify", cwd=config_repo).returncode == 0

    def test_same_value_is_a_noop(self, config_repo: Path):
        state = git_state(config_repo)
        result = set_settings(["agents.maxReplicas=8"], repo=config_repo)
        assert result.noop and result.commit is None and git_state(config_repo) == state

    def test_dry_run_changes_nothing(self, config_repo: Path):
        state = git_state(config_repo)
        r = raibid("gitops", "set", "agents.maxReplicas=10", "--dry-run", cwd=config_repo)
        assert r.returncode == 0, r.stderr
        assert "agents.maxReplicas: 8 → 10" in r.stdout
        assert "ScaledJob/raibid-ci/raibid-agent:\n  spec.maxReplicaCount: 8 → 10" in r.stdout
        assert "dry run" in r.stderr and git_state(config_repo) == state

    def test_gpu_change_regenerates_the_generated_patch(self, config_repo: Path):
        set_settings(["agents.gpus=1", "agents.maxReplicas=1"], repo=config_repo)
        assert "nvidia.com~1gpu" in (config_repo / layout.GPU_PATCH_PATH).read_text()
        assert raibid("gitops", "verify", cwd=config_repo).returncode == 0


class TestThroughTheCommand:
    """Issue 17 item 10 with real git: the subject keeps the new value, and `set` says "pushed"
    only when the remote has the commit."""

    def test_subjects_keep_the_value(self, config_repo: Path):
        pipeline = ('[{"name":"test","run":"make test && make lint && make docs","timeoutSeconds":1800},'
                    '{"name":"package","run":"make package"}]')
        cases = [
            (["agents.maxReplicas=6"], "raibid: set agents.maxReplicas 8 → 6"),
            (["flux.prune=false"], "raibid: set flux.prune true → false"),
            (["agents.memory=6Gi"], "raibid: set agents.memory 4Gi → 6Gi"),
            (["agents.image=registry.example:5000/raibid/agent:0.2.0"],
             "raibid: set agents.image=registry.example:5000/raibid/agent:0.2.0"),
            (["agents.image=gitea.raibid-ci.svc.cluster.local:3000/raibid/agent:0.3.0"],
             "raibid: set agents.image=gitea.raibid-ci.sv…ocal:3000/raibid/agent:0.3.0"),
            # Validated steps gain their defaults (timeoutSeconds): the subject shows the value committed.
            ([f"agents.defaultPipeline={pipeline}"],
             'raibid: set agents.defaultPipeline=[{"name":"test…timeoutSeconds":1800}]'),
            (["scaling.lagCount=2", "scaling.pollingInterval=5", "agents.cpu=1"],
             "raibid: set scaling.lagCount=2, scaling.pollingInterval=5, agents.cpu=1"),
        ]
        for assignments, subject in cases:
            r = raibid("gitops", "set", *assignments, "-C", str(config_repo), cwd=config_repo.parent)
            assert r.returncode == 0, r.stderr
            written = git(config_repo, "log", "-1", "--format=%s")
            assert written == subject and len(written) <= SUBJECT_MAX, written
            body = git(config_repo, "log", "-1", "--format=%b")
            committed = load_path(config_repo / layout.SETTINGS_PATH)
            for a in assignments:
                key = a.partition("=")[0]
                assert f"Raibid-Set: {key}={format_value(committed.get(key))}\n" in body, "the trailer has it whole"

    def test_pushed_only_when_pushed(self, remote_pair):
        bare, a, _ = remote_pair
        r = raibid("gitops", "set", "agents.maxReplicas=6", cwd=a)
        assert r.returncode == 0, r.stderr
        assert f"committed {git(bare, 'rev-parse', 'main')[:12]} and pushed it to main" in r.stderr
        r = raibid("gitops", "set", "agents.maxReplicas=5", "--dry-run", cwd=a)
        assert "pushed" not in r.stderr and "dry run: nothing was changed" in r.stderr
        git(a, "remote", "remove", "origin")
        r = raibid("gitops", "set", "agents.maxReplicas=4", "-o", "json", cwd=a)
        assert r.returncode == 0, r.stderr
        assert "on the local branch only: not pushed" in r.stderr and "pushed it" not in r.stderr
        assert '"pushed": false' in r.stdout
        assert load_text(git(bare, "show", f"main:{layout.SETTINGS_PATH}")).agents.max_replicas == 6


class TestBadInputChangesNothing:
    @pytest.mark.parametrize("args, words", [
        (["agents.maxReplicas=twelve"], "must be an integer"),
        (["agents.maxReplicas=0"], "agents.maxReplicas"),
        (["agents.maxReplica=12"], "did you mean agents.maxReplicas"),
        (["agents.minReplicas=9"], "agents.minReplicas (9) must not exceed agents.maxReplicas (8)"),
        (["agents.maxReplicas=11"], "exceeds cluster.capacity.cpu (20)"),
        (["flux.prune=yes"], "must be true or false"),
        (["agents.maxReplicas"], "is not KEY=VALUE"),
    ])
    def test_refused_with_a_clear_message(self, config_repo: Path, args: list[str], words: str):
        state = git_state(config_repo)
        r = raibid("gitops", "set", *args, cwd=config_repo)
        assert r.returncode == 2 and words in r.stderr, r.stderr
        assert git_state(config_repo) == state

    def test_dirty_tree(self, config_repo: Path):
        (config_repo / "notes.txt").write_text("mine\n")
        state = git_state(config_repo)
        with pytest.raises(ConfigRepoError, match=r"uncommitted changes \(notes.txt\)"):
            set_settings(["agents.maxReplicas=6"], repo=config_repo)
        assert git_state(config_repo) == state and (config_repo / "notes.txt").read_text() == "mine\n"

    def test_verify_failure_restores_the_tree(self, config_repo: Path):
        # A committed contract breach set does not fix: an unknown field in a base manifest.
        redis = config_repo / "base" / "redis.yaml"
        redis.write_text(redis.read_text().replace("kind: Service\n", "kind: Service\nbogusField: 1\n", 1))
        git(config_repo, "commit", "-qam", "break the contract by hand")
        state = git_state(config_repo)
        with pytest.raises(VerifyFailed) as exc:
            set_settings(["agents.maxReplicas=6"], repo=config_repo)
        assert any("bogusField" in p.message for p in exc.value.problems)
        assert git_state(config_repo) == state
        assert "maxReplicas: 8\n" in (config_repo / layout.SETTINGS_PATH).read_text()

    def test_untracked_generated_file_is_cleaned(self, config_repo: Path):
        """A file set creates (here the generated GPU patch, missing on the base) is removed
        again when set fails later."""
        git(config_repo, "rm", "-q", layout.GPU_PATCH_PATH)
        redis = config_repo / "base" / "redis.yaml"
        redis.write_text(redis.read_text().replace("kind: Service\n", "kind: Service\nbogusField: 1\n", 1))
        git(config_repo, "commit", "-qam", "hand edits that break the contract")
        state = git_state(config_repo)
        with pytest.raises(VerifyFailed):
            set_settings(["agents.gpus=1", "agents.maxReplicas=1"], repo=config_repo)
        assert git_state(config_repo) == state
        assert not (config_repo / layout.GPU_PATCH_PATH).exists()


class TestMovedBranch:
    def test_different_keys_both_land(self, remote_pair):
        bare, a, b = remote_pair
        set_settings(["agents.maxReplicas=6"], repo=a)
        result = set_settings(["scaling.pollingInterval=30"], repo=b)  # b is stale: its push is refused once
        assert result.attempts == 2 and result.pushed_to == "main"
        main = git(bare, "rev-parse", "main")
        assert main == result.commit == git(b, "rev-parse", "main")
        assert git(b, "symbolic-ref", "--short", "HEAD") == "main"
        settings = git(bare, "show", f"main:{layout.SETTINGS_PATH}")
        assert "maxReplicas: 6\n" in settings and "pollingInterval: 30\n" in settings
        assert git(b, "status", "--porcelain") == ""

    def test_same_key_other_value_is_a_conflict(self, remote_pair):
        bare, a, b = remote_pair
        set_settings(["agents.maxReplicas=6"], repo=a)
        remote_head = git(bare, "rev-parse", "main")
        state = git_state(b)
        with pytest.raises(ChangeConflict, match=r"agents.maxReplicas was changed meanwhile from 8 to 6 "
                                                 r"\(you asked for 4\)"):
            set_settings(["agents.maxReplicas=4"], repo=b)
        assert git(bare, "rev-parse", "main") == remote_head and git_state(b) == state

    def test_same_key_same_value_is_fine(self, remote_pair):
        """b asks for a value a already set, plus a new one: only the new one is committed, on
        top of a's commit, and the remote ends with both."""
        bare, a, b = remote_pair
        first = set_settings(["agents.maxReplicas=6"], repo=a)
        result = set_settings(["agents.maxReplicas=6", "scaling.lagCount=3"], repo=b)
        assert [c.key for c in result.changes] == ["scaling.lagCount"]
        assert result.attempts == 2 and result.pushed_to == "main"
        assert git(bare, "rev-parse", "main") == result.commit == git(b, "rev-parse", "main")
        assert git(b, "symbolic-ref", "--short", "HEAD") == "main"  # b's branch moved, not a detached HEAD
        assert git(bare, "rev-parse", "main^") == first.commit
        remote = load_text(git(bare, "show", f"main:{layout.SETTINGS_PATH}"))
        assert (remote.agents.max_replicas, remote.scaling.lag_count) == (6, 3)
        message = git(bare, "log", "-1", "--format=%B", "main")
        assert "Raibid-Set: scaling.lagCount=3" in message and "agents.maxReplicas" not in message
        assert git(b, "status", "--porcelain") == ""
        assert git(a, "rev-parse", "HEAD") == first.commit and git(a, "status", "--porcelain") == ""

    def test_combination_that_no_longer_validates(self, remote_pair):
        """b's change was fine on the commit it started from but not with a's change: refused,
        and neither the remote, nor b, nor a changes."""
        bare, a, b = remote_pair
        first = set_settings(["agents.cpu=4", "agents.maxReplicas=5"], repo=a)  # 20 CPU: full
        state_a, state_b = git_state(a), git_state(b)
        with pytest.raises(ChangeConflict, match="no longer validates"):
            set_settings(["cluster.capacity.cpu=16"], repo=b)  # fine with 8 x 2, not with 5 x 4
        assert git(bare, "rev-parse", "main") == first.commit
        remote = load_text(git(bare, "show", f"main:{layout.SETTINGS_PATH}"))
        assert (remote.agents.cpu, remote.agents.max_replicas, remote.cluster.capacity.cpu) == ("4", 5, "20")
        assert git_state(b) == state_b
        assert load_path(b / layout.SETTINGS_PATH).cluster.capacity.cpu == "20"
        assert git_state(a) == state_a

    def test_refuses_to_push_unpushed_local_commits(self, remote_pair):
        bare, a, _ = remote_pair
        (a / "NOTES.md").write_text("local only\n")
        git(a, "add", "NOTES.md")
        git(a, "commit", "-qm", "a local commit")
        state, remote_head = git_state(a), git(bare, "rev-parse", "main")
        with pytest.raises(ConfigRepoError, match="has 1 commit\\(s\\) that origin/main does not"):
            set_settings(["agents.maxReplicas=6"], repo=a)
        assert git_state(a) == state and git(bare, "rev-parse", "main") == remote_head

    def test_refuses_when_not_on_the_target_branch(self, remote_pair):
        _, a, _ = remote_pair
        git(a, "checkout", "-qb", "feature")
        state = git_state(a)
        with pytest.raises(ConfigRepoError, match="on branch feature; set pushes to main"):
            set_settings(["agents.maxReplicas=6"], repo=a)
        assert git_state(a) == state
