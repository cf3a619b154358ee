"""The operator's day on the local stack: every committed setting takes effect, nothing turns a
bad commit green, and undo and plain git work (issue: "Every committed setting takes effect").

Each test starts from the ``pool`` fixture: a generated repository on Gitea, clusters/dgx-spark
applied once as bootstrap does (from then on Flux manages its own objects), synced.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from fixtures_pool import Pool

from raibid_gitops.gitops.layout import SETTINGS_PATH

pytestmark = pytest.mark.stack


def _ks(pool: Pool, name: str) -> dict:
    return pool.get("kustomization", name, "-n", "flux-system")


def _commit_edit(pool: Pool, old: str, new: str, message: str) -> str:
    path = pool.repo / SETTINGS_PATH
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    pool.git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qam", message)
    return pool.git("rev-parse", "HEAD")


def _remote_head(pool: Pool) -> str:
    return pool.git("ls-remote", "origin", "refs/heads/main").split()[0]


class TestFluxSettingsTakeEffect:
    """flux.* settings are applied by Flux itself (raibid-cluster applies clusters/dgx-spark)."""

    def test_flux_interval_reaches_the_live_kustomization(self, pool: Pool) -> None:
        assert _ks(pool, "raibid-config")["spec"]["interval"] == "1m"
        pool.raibid("gitops", "set", "flux.interval=2m")
        out = json.loads(pool.sync("-o", "json").stdout)
        head = pool.git("rev-parse", "HEAD")
        # Both Kustomizations, the Flux objects' first (dependsOn), at the pushed commit.
        assert list(out["kustomizations"]) == ["flux-system/raibid-cluster", "flux-system/raibid-config"]
        assert set(out["kustomizations"].values()) == {f"main@sha1:{head}"}
        assert _ks(pool, "raibid-config")["spec"]["interval"] == "2m"
        assert _ks(pool, "raibid-cluster")["spec"]["interval"] == "2m"
        # sync asked raibid-config to go on once its dependency had applied the commit, rather
        # than leave it to kustomize-controller's --requeue-dependency.
        assert _ks(pool, "raibid-config")["status"].get("lastHandledReconcileAt")

    def test_diff_reports_a_hand_patched_flux_object(self, pool: Pool) -> None:
        clean = pool.raibid("gitops", "diff", check=False)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        pool.kube.kubectl("patch", "kustomization", "raibid-config", "-n", "flux-system", "--type=merge",
                          "-p", '{"spec":{"timeout":"9m"}}')
        drift = pool.raibid("gitops", "diff", check=False)
        assert drift.returncode == 1, drift.stdout + drift.stderr
        assert "Kustomization/flux-system/raibid-config" in drift.stdout and "spec.timeout" in drift.stdout


class TestNothingTurnsABadCommitGreen:
    def test_sync_refuses_to_push_what_verify_rejects(self, pool: Pool) -> None:
        before = _remote_head(pool)
        sha = _commit_edit(pool, "heartbeatSeconds: 15", "heartbeatSeconds: 200", "hand edit")
        proc = pool.sync(check=False)
        assert proc.returncode == 1, proc.stderr
        assert f"{sha[:12]} was not pushed: verify found 1 problem(s)" in proc.stderr
        assert "claimIdleSeconds" in proc.stderr and "--no-verify" in proc.stderr
        assert _remote_head(pool) == before
        # The emergency override pushes it, and says so.
        forced = pool.sync("--no-verify", "--timeout", "60s", check=False)
        assert "WARNING: pushing" in forced.stderr and "without verify" in forced.stderr
        assert _remote_head(pool) == sha

    def test_status_exit_code_follows_readiness(self, pool: Pool) -> None:
        assert pool.raibid("gitops", "status", check=False).returncode == 0
        kz = pool.repo / "overlays" / "dgx-spark" / "kustomization.yaml"
        kz.write_text(kz.read_text().replace("  - ../../base\n", "  - ../../base\n  - missing.yaml\n"))
        pool.git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qam", "broken")
        assert pool.sync("--no-verify", "--timeout", "60s", check=False).returncode == 1
        status = pool.raibid("gitops", "status", check=False)
        assert status.returncode == 1, status.stdout
        assert "BuildFailed" in status.stdout

    def test_timeout_says_what_flux_is_waiting_for(self, pool: Pool) -> None:
        # Redis's StatefulSet asks for more memory than the node has: its Pod never schedules, so
        # Flux's health check waits; sync times out naming what Flux says it is doing. (A short
        # flux.timeout first, so Flux gives up soon after and the teardown is not kept waiting.)
        pool.raibid("gitops", "set", "flux.timeout=20s")
        pool.sync()
        sts = pool.repo / "base" / "redis.yaml"
        sts.write_text(sts.read_text().replace("memory: 512Mi", "memory: 900Gi")
                       .replace("memory: 2560Mi", "memory: 900Gi"))
        pool.git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qam", "too big")
        proc = pool.sync("--timeout", "15s", check=False)
        assert proc.returncode == 3, proc.stderr
        assert "Flux says" in proc.stderr, proc.stderr


class TestMergedPullRequests:
    def test_sync_after_a_merge_fast_forwards_and_reports_the_merge(self, pool: Pool, tmp_path: Path) -> None:
        old = pool.git("rev-parse", "HEAD")
        pool.raibid("gitops", "set", "agents.maxReplicas=6", "--pr")
        pulls = pool.gitea.api("GET", f"/repos/{pool.owner}/{pool.name}/pulls?state=open")
        number = pulls[0]["number"]  # type: ignore[index]
        # Merged by someone else (a reviewer in the web UI): the local checkout knows nothing.
        pool.gitea.api("POST", f"/repos/{pool.owner}/{pool.name}/pulls/{number}/merge", {"Do": "merge"})
        got = pool.raibid("gitops", "get", "agents.maxReplicas")
        assert got.stdout.strip() == "8"  # the checkout is behind and does not know it yet
        out = json.loads(pool.sync("-o", "json").stdout)
        merge = pool.git("rev-parse", "HEAD")
        assert merge != old and out["commit"] == merge
        assert pool.scaled_job()["spec"]["maxReplicaCount"] == 6

    def test_get_says_when_the_checkout_is_behind(self, pool: Pool, tmp_path: Path) -> None:
        other = tmp_path / "other"
        subprocess.run(["git", "clone", "-q", pool.git("remote", "get-url", "origin"), str(other)],
                       env=pool.gitea.git_env(pool.env), check=True, capture_output=True)
        (other / "NOTES.md").write_text("hello\n")
        for args in (["add", "NOTES.md"], ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit",
                                            "-qm", "notes"], ["push", "-q", "origin", "main"]):
            subprocess.run(["git", *args], cwd=other, env=pool.gitea.git_env(pool.env), check=True)
        pool.git("fetch", "-q", "origin")
        got = pool.raibid("gitops", "get", "agents.maxReplicas")
        assert "1 commit(s) behind origin/main" in got.stderr


class TestUndo:
    def test_set_accepts_the_change_that_fixes_an_invalid_file(self, pool: Pool) -> None:
        _commit_edit(pool, "heartbeatSeconds: 15", "heartbeatSeconds: 200", "hand edit")
        pool.git("push", "-q", "origin", "main")  # plain git: nothing verified it
        assert pool.raibid("gitops", "verify", check=False).returncode == 1
        pool.raibid("gitops", "set", "queue.heartbeatSeconds=15")
        assert pool.raibid("gitops", "verify", check=False).returncode == 0
        still = pool.raibid("gitops", "set", "queue.maxDeliveries=5", check=False)
        assert still.returncode == 0  # the file is valid again: set works as usual

    def test_a_change_that_leaves_the_file_invalid_is_refused(self, pool: Pool) -> None:
        sha = _commit_edit(pool, "heartbeatSeconds: 15", "heartbeatSeconds: 200", "hand edit")
        pool.git("push", "-q", "origin", "main")
        proc = pool.raibid("gitops", "set", "queue.maxDeliveries=5", check=False)
        assert proc.returncode == 2 and "stays invalid" in proc.stderr
        assert pool.git("rev-parse", "HEAD") == sha and pool.git("status", "--porcelain") == ""

    def test_revert_undoes_a_set_and_is_applied(self, pool: Pool) -> None:
        pool.raibid("gitops", "set", "agents.maxReplicas=6")
        changed = pool.git("rev-parse", "HEAD")
        pool.raibid("gitops", "revert")
        subject = pool.git("log", "-1", "--format=%s")
        assert subject.startswith(f"raibid: revert {changed[:12]} agents.maxReplicas 6 → 8"), subject
        assert f"Raibid-Revert: {changed}" in pool.git("log", "-1", "--format=%B")
        assert _remote_head(pool) == pool.git("rev-parse", "HEAD")  # pushed like set
        pool.sync()
        assert pool.scaled_job()["spec"]["maxReplicaCount"] == 8

    def test_revert_refuses_a_commit_that_changed_more_than_settings(self, pool: Pool) -> None:
        (pool.repo / "NOTES.md").write_text("x\n")
        pool.git("add", "NOTES.md")
        pool.git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "notes")
        head = pool.git("rev-parse", "HEAD")
        proc = pool.raibid("gitops", "revert", check=False)
        assert proc.returncode == 2 and "changed more than settings (NOTES.md)" in proc.stderr
        assert "git revert" in proc.stderr and pool.git("rev-parse", "HEAD") == head

    def test_revert_of_a_setting_changed_again_is_a_conflict(self, pool: Pool) -> None:
        pool.raibid("gitops", "set", "agents.maxReplicas=6")
        first = pool.git("rev-parse", "HEAD")
        pool.raibid("gitops", "set", "agents.maxReplicas=7")
        proc = pool.raibid("gitops", "revert", first, check=False)
        assert proc.returncode != 0 and "changed meanwhile" in proc.stderr
        assert pool.raibid("gitops", "get", "agents.maxReplicas").stdout.strip() == "7"


class TestPlainGit:
    def test_pull_and_push_work_with_the_token_and_never_store_it(self, pool: Pool, tmp_path: Path) -> None:
        # A clean environment: only RAIBID_GITEA_TOKEN/USER, no header injected by the tests.
        env = {k: v for k, v in pool.env.items() if not k.startswith("GIT_CONFIG")}
        env["GIT_TERMINAL_PROMPT"] = "0"
        pool.raibid("gitops", "set", "agents.maxReplicas=7")  # pushed by raibid
        subprocess.run(["git", "reset", "-q", "--hard", "HEAD~1"], cwd=pool.repo, check=True)
        pulled = subprocess.run(["git", "pull", "-q"], cwd=pool.repo, env=env, capture_output=True, text=True)
        assert pulled.returncode == 0, pulled.stderr
        (pool.repo / "NOTES.md").write_text("plain git\n")
        subprocess.run(["git", "add", "NOTES.md"], cwd=pool.repo, check=True)
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "notes"],
                       cwd=pool.repo, check=True)
        pushed = subprocess.run(["git", "push", "-q"], cwd=pool.repo, env=env, capture_output=True, text=True)
        assert pushed.returncode == 0, pushed.stderr
        assert pool.gitea.token not in (pool.repo / ".git" / "config").read_text()
        no_token = {k: v for k, v in env.items() if not k.startswith("RAIBID_GITEA_TOKEN")}
        refused = subprocess.run(["git", "pull", "-q"], cwd=pool.repo, env=no_token, capture_output=True, text=True)
        assert refused.returncode != 0  # nothing cached: without the token there is no access
