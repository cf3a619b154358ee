"""`raibid gitops set`, `pr` and `verify --commit-status` against the real Gitea of the local
stack: direct pushes, pull requests merged through the API, ten concurrent writers, a
conflict between two, a hand edit in the web editor's API caught by verify, and bad input
leaving the local clone and the remote exactly as they were."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fixtures_gitops import git_state

from raibid_gitops.clients.gitea import Gitea, RepoRef
from raibid_gitops.errors import (
    ChangeConflict,
    ConfigRepoError,
    GiteaError,
    GitError,
    VerifyFailed,
)
from raibid_gitops.gitops import layout
from raibid_gitops.gitops.change import format_value, set_settings
from raibid_gitops.gitops.generate import init
from raibid_gitops.settings import load_text

pytestmark = pytest.mark.stack


@pytest.fixture
def env(gitea, monkeypatch) -> dict[str, str]:
    """The token as a user passes it: in the environment, never in a URL."""
    monkeypatch.setenv("RAIBID_GITEA_TOKEN", gitea.token)
    monkeypatch.setenv("RAIBID_GITEA_USER", gitea.admin_user)
    monkeypatch.delenv("RAIBID_GITEA_URL", raising=False)
    return {**os.environ}


@pytest.fixture
def api(gitea) -> Iterator[Gitea]:
    with Gitea(gitea.url, gitea.token) as client:
        yield client


@pytest.fixture
def ref(gitea_repo) -> RepoRef:
    return RepoRef(gitea_repo.gitea.url, gitea_repo.owner, gitea_repo.name)


@pytest.fixture
def seeded(gitea_repo, env, tmp_path: Path) -> Path:
    """A config repository pushed to the fresh Gitea repository; returns the local clone."""
    path = init(tmp_path / "seed", remote=gitea_repo.clone_url).path
    gitea_repo.git("push", "--quiet", "origin", "main", cwd=path)
    return path


def clone(gitea_repo, dst: Path) -> Path:
    gitea_repo.git("clone", "--quiet", gitea_repo.clone_url, str(dst), cwd=dst.parent)
    return dst


def remote_settings(api: Gitea, ref: RepoRef, branch: str = "main"):
    return load_text(api.get_file(ref, layout.SETTINGS_PATH, branch)[0])


def raibid(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raibid_gitops.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def second_user(gitea, api: Gitea, ref: RepoRef) -> Gitea:
    """A reviewer with write access: Gitea forbids approving one's own pull request."""
    name = f"rev-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    api.create_user(name, password)
    api.add_collaborator(ref, name, "write")
    with Gitea(gitea.url, basic_auth=(name, password)) as basic:
        token = basic.create_token(name, "review")
    return Gitea(gitea.url, token)


class TestDirect:
    def test_set_pushes_one_commit_to_main(self, seeded: Path, api: Gitea, ref: RepoRef):
        result = set_settings(["agents.maxReplicas=10", "scaling.lagCount=2"], repo=seeded)
        assert result.pushed_to == "main" and result.attempts == 1
        assert api.branch_head(ref, "main") == result.commit == subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=seeded, capture_output=True, text=True, check=False).stdout.strip()
        s = remote_settings(api, ref)
        assert (s.agents.max_replicas, s.scaling.lag_count) == (10, 2)
        patch, _ = api.get_file(ref, f"{layout.OVERLAY_DIR}/agent-scaledjob-patch.yaml", "main")
        assert 'value: 10 # {"$raibid": "agents.maxReplicas"}' in patch

    def test_set_from_the_gitea_url(self, seeded: Path, gitea_repo, api: Gitea, ref: RepoRef, tmp_path: Path):
        """No local clone: set clones into a temporary directory, pushes, and cleans up."""
        before = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("raibid-set-*"))
        result = set_settings(["agents.gpus=1", "agents.maxReplicas=1"], repo=gitea_repo.clone_url)
        assert api.branch_head(ref, "main") == result.commit
        assert remote_settings(api, ref).agents.gpus == 1
        assert set(Path(os.environ.get("TMPDIR", "/tmp")).glob("raibid-set-*")) == before


class TestPullRequest:
    def test_pr_then_approve_and_merge_through_the_api(self, seeded: Path, gitea, gitea_repo, api: Gitea,
                                                       ref: RepoRef, env: dict[str, str]):
        main_before = api.branch_head(ref, "main")
        local_before = git_state(seeded)
        r = raibid("gitops", "set", "agents.maxReplicas=6", "--pr", "-m", "fewer agents at night", cwd=seeded, env=env)
        assert r.returncode == 0, r.stderr
        url = r.stdout.strip().splitlines()[-1]
        assert url.startswith(f"{gitea.url}/{ref.full_name}/pulls/")
        number = int(url.rsplit("/", 1)[1])
        assert git_state(seeded) == local_before, "--pr leaves the local checkout as it was"
        assert api.branch_head(ref, "main") == main_before, "--pr does not touch main"
        assert gitea.token not in r.stdout + r.stderr

        pull = api.get_pull(ref, number)
        assert pull["title"] == "raibid: set agents.maxReplicas 8 → 6"
        assert pull["head"]["ref"].startswith("raibid/set-agents.maxReplicas-6-")
        body = pull["body"]
        assert "fewer agents at night" in body and "| `agents.maxReplicas` | `8` | `6` |" in body
        assert "ScaledJob/raibid-ci/raibid-agent:\n  spec.maxReplicaCount: 8 → 6" in body
        status = api.status_of(ref, pull["head"]["sha"], "raibid/verify")
        assert status and status["status"] == "success"

        r = raibid("gitops", "pr", "list", "-o", "json", cwd=seeded, env=env)
        assert r.returncode == 0, r.stderr
        assert '"verify": "success"' in r.stdout and f'"number": {number}' in r.stdout

        with second_user(gitea, api, ref) as reviewer:
            reviewer.approve_pull(ref, number, "ok")
        assert any(rv["state"] == "APPROVED" for rv in api.list_reviews(ref, number))
        r = raibid("gitops", "pr", "merge", str(number), "--delete-branch", cwd=seeded, env=env)
        assert r.returncode == 0, r.stderr
        merged = api.get_pull(ref, number)
        assert merged["merged"] and api.branch_head(ref, "main") == merged["merge_commit_sha"]
        assert remote_settings(api, ref).agents.max_replicas == 6


class TestConcurrentWriters:
    KEYS: ClassVar[dict[str, str]] = {
        "agents.maxReplicas": "6", "agents.jobTimeoutSeconds": "7200", "agents.ttlSecondsAfterFinished": "300",
        "agents.idleTimeoutSeconds": "120", "agents.logMaxLen": "20000", "scaling.pollingInterval": "15",
        "scaling.lagCount": "2", "scaling.successfulJobsHistoryLimit": "3", "scaling.failedJobsHistoryLimit": "7",
        "queue.maxDeliveries": "5",
    }

    def test_ten_writers_of_different_keys_all_land(self, seeded: Path, gitea_repo, api: Gitea, ref: RepoRef,
                                                     tmp_path: Path):
        clones = [clone(gitea_repo, tmp_path / f"w{i}") for i in range(len(self.KEYS))]
        results: dict[str, Any] = {}
        start = threading.Barrier(len(clones))

        def write(path: Path, key: str, value: str) -> None:
            start.wait()
            try:
                results[key] = set_settings([f"{key}={value}"], repo=path)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                results[key] = exc

        threads = [threading.Thread(target=write, args=(p, k, v))
                   for p, (k, v) in zip(clones, self.KEYS.items(), strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        failed = {k: r for k, r in results.items() if isinstance(r, BaseException)}
        assert not failed and len(results) == 10, failed

        final = remote_settings(api, ref)
        for key, value in self.KEYS.items():
            assert str(final.get(key)) == value, f"{key} lost"
        seed = subprocess.run(["git", "rev-parse", "HEAD"], cwd=seeded, capture_output=True, text=True,
                              check=True).stdout.strip()
        check = clones[0]
        gitea_repo.git("fetch", "--quiet", "origin", cwd=check)

        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=check, capture_output=True, text=True, check=True).stdout.strip()

        tip = git("rev-parse", "origin/main")
        assert tip == api.branch_head(ref, "main")
        # The remote history since the seed is exactly the ten writers' commits, one after the
        # other (no merge, nothing else), and the last one is the tip.
        commits = {r.commit for r in results.values()}
        assert len(commits) == 10 and tip in commits
        assert set(git("rev-list", f"{seed}..{tip}").split()) == commits
        assert git("rev-list", "--merges", f"{seed}..{tip}") == ""
        subjects = git("log", "--format=%s", f"{seed}..{tip}").splitlines()
        before = load_text((seeded / layout.SETTINGS_PATH).read_text())
        assert sorted(subjects) == sorted(f"raibid: set {k} {format_value(before.get(k))} → {v}"
                                          for k, v in self.KEYS.items())
        assert max(r.attempts for r in results.values()) > 1, "the writers did race"
        # The tip itself verifies, with all ten values.
        from raibid_gitops.gitops.verify import verify

        git("checkout", "--quiet", "--detach", tip)
        report = verify(check)
        assert report.ok, [str(p) for p in report.problems]

    def test_same_key_from_two_writers_is_reported(self, seeded: Path, gitea_repo, api: Gitea, ref: RepoRef,
                                                   tmp_path: Path):
        a, b = clone(gitea_repo, tmp_path / "a"), clone(gitea_repo, tmp_path / "b")
        first = set_settings(["agents.maxReplicas=6"], repo=a)
        state = git_state(b)
        with pytest.raises(ChangeConflict) as exc:
            set_settings(["agents.maxReplicas=4"], repo=b)
        assert "agents.maxReplicas was changed meanwhile from 8 to 6 (you asked for 4)" in exc.value.message
        assert "raibid: set agents.maxReplicas 8 → 6" in exc.value.message, "names the commit that won"
        assert api.branch_head(ref, "main") == first.commit
        assert remote_settings(api, ref).agents.max_replicas == 6, "never overwritten"
        assert git_state(b) == state


class TestHandEdit:
    def test_web_editor_edit_fails_verify_and_its_pr_gets_a_failed_status(
            self, seeded: Path, gitea, gitea_repo, api: Gitea, ref: RepoRef, env: dict[str, str], tmp_path: Path):
        # The classic hand edit: settings.yaml changed, the marked KEDA field left behind.
        text, sha = api.get_file(ref, layout.SETTINGS_PATH, "main")
        edited = text.replace("  maxReplicas: 8\n", "  maxReplicas: 10\n")
        head = api.update_file(ref, layout.SETTINGS_PATH, edited, sha=sha, message="more agents (web editor)",
                               branch="main", new_branch="hand-edit")
        pull = api.create_pull(ref, head="hand-edit", base="main", title="more agents")

        work = clone(gitea_repo, tmp_path / "check")
        gitea_repo.git("checkout", "--quiet", "hand-edit", cwd=work)
        r = raibid("gitops", "verify", "--commit-status", cwd=work, env=env)
        assert r.returncode == 1
        assert "agent-scaledjob-patch.yaml" in r.stdout and "differs from agents.maxReplicas" in r.stdout
        status = api.status_of(ref, head, "raibid/verify")
        assert status and status["status"] == "failure"
        assert "problem(s)" in status["description"] and "agents.maxReplicas" in status["description"]
        assert api.get_pull(ref, pull["number"])["head"]["sha"] == head

        # The same check on the PR as Gitea has it, without a checkout.
        api.create_status(ref, head, state="pending", context="raibid/verify")
        r = raibid("gitops", "pr", "verify", str(pull["number"]), cwd=seeded, env=env)
        assert r.returncode == 1 and "differs from agents.maxReplicas" in r.stdout, r.stderr
        assert (api.status_of(ref, head, "raibid/verify") or {}).get("status") == "failure"

        r = raibid("gitops", "pr", "merge", str(pull["number"]), cwd=work, env=env)
        assert r.returncode != 0 and "raibid/verify on its head" in r.stderr and "failure" in r.stderr
        assert not api.get_pull(ref, pull["number"])["merged"]

        # Fixing it with set on the PR branch's content is what the docs recommend; here:
        # verify passes on main and reports success.
        gitea_repo.git("checkout", "--quiet", "main", cwd=work)
        r = raibid("gitops", "verify", "--commit-status", cwd=work, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        ok = api.status_of(ref, api.branch_head(ref, "main"), "raibid/verify")
        assert ok and ok["status"] == "success"


class TestBadInputChangesNothing:
    """Each refusal: clear message, non-zero exit, local clone and remote exactly as before."""

    @pytest.fixture
    def snapshot(self, seeded: Path, gitea_repo, api: Gitea, ref: RepoRef):
        """Local HEAD and status; every ref on the remote (git's own view); the number of PRs."""
        def take() -> tuple[Any, ...]:
            refs = gitea_repo.git("ls-remote", gitea_repo.clone_url, cwd=seeded)
            return git_state(seeded), api.branch_head(ref, "main"), refs, len(api.list_pulls(ref, "all"))

        return take

    INVALID: ClassVar[list[tuple[str, str]]] = [
        ("agents.maxReplicas=lots", "must be an integer"),
        ("agents.maxReplica=6", "did you mean agents.maxReplicas"),
        ("agents.minReplicas=9", "agents.minReplicas (9) must not exceed agents.maxReplicas (8)"),
        ("agents.maxReplicas=11", "exceeds cluster.capacity.cpu (20)"),
    ]

    @pytest.mark.parametrize("mode", [[], ["--pr"]], ids=["direct", "pr"])
    def test_invalid_values(self, seeded: Path, snapshot, env, mode: list[str]):
        # One repository for all cases: each refusal must leave it as the next one finds it.
        before = snapshot()
        for assignment, words in self.INVALID:
            r = raibid("gitops", "set", assignment, *mode, cwd=seeded, env=env)
            assert r.returncode == 2 and words in r.stderr, (assignment, r.stderr)
            assert snapshot() == before, assignment

    def test_dirty_tree(self, seeded: Path, snapshot):
        settings = seeded / layout.SETTINGS_PATH
        settings.write_text(settings.read_text().replace("maxReplicas: 8", "maxReplicas: 9"))
        before = snapshot()
        with pytest.raises(ConfigRepoError, match="uncommitted changes"):
            set_settings(["scaling.lagCount=2"], repo=seeded)
        assert snapshot() == before and "maxReplicas: 9" in settings.read_text()

    def test_verify_failure(self, seeded: Path, gitea_repo, snapshot):
        redis = seeded / "base" / "redis.yaml"
        redis.write_text(redis.read_text().replace("kind: Service\n", "kind: Service\nbogusField: 1\n", 1))
        subprocess.run(["git", "commit", "-qam", "hand edit that breaks the schema"], cwd=seeded, check=True)
        gitea_repo.git("push", "--quiet", "origin", "main", cwd=seeded)
        before = snapshot()
        for pr in (False, True):
            with pytest.raises(VerifyFailed):
                set_settings(["agents.maxReplicas=6"], repo=seeded, pr=pr)
            assert snapshot() == before

    def test_gitea_unreachable(self, seeded: Path, gitea_repo, snapshot):
        before = snapshot()
        subprocess.run(["git", "remote", "set-url", "origin", "http://127.0.0.1:9/raibid/nowhere.git"], cwd=seeded,
                       check=True)
        try:
            local = git_state(seeded)
            with pytest.raises(GitError, match="cannot reach the remote"):
                set_settings(["agents.maxReplicas=6"], repo=seeded)
            with pytest.raises(GiteaError, match="cannot reach Gitea at http://127.0.0.1:9"):
                set_settings(["agents.maxReplicas=6"], repo=seeded, pr=True)
            assert git_state(seeded) == local
        finally:
            subprocess.run(["git", "remote", "set-url", "origin", gitea_repo.clone_url], cwd=seeded, check=True)
        assert snapshot() == before

    def test_push_refused_by_branch_protection(self, seeded: Path, api: Gitea, ref: RepoRef, snapshot, env):
        api.protect_branch(ref, "main", enable_push=False)
        before = snapshot()
        r = raibid("gitops", "set", "agents.maxReplicas=6", cwd=seeded, env=env)
        assert r.returncode == 2 and "refused" in r.stderr and "--pr" in r.stderr, r.stderr
        assert env["RAIBID_GITEA_TOKEN"] not in r.stderr
        assert snapshot() == before
        # The reviewed path still works under protection.
        r = raibid("gitops", "set", "agents.maxReplicas=6", "--pr", cwd=seeded, env=env)
        assert r.returncode == 0, r.stderr
        assert git_state(seeded) == before[0] and api.branch_head(ref, "main") == before[1]
