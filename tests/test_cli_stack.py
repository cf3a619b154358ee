"""Issue 17 items 8, 9 and 10 against the real stack: the commands that talk to Gitea,
Kubernetes and Flux take ``-C`` and the common ``-o``; ``status -o wide`` shows Flux's whole
message; `pr approve` of one's own pull request and `pr close`; `set` says "pushed" only when
it pushed; the agent finds its kubeconfig as the CLI does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import test_change_gitea
import test_sync_stack
from fixtures_redis import FAST_SETTINGS
from ruamel.yaml import YAML
from test_sync_stack import FluxEnv, _git, run

from raibid_gitops.clients.gitea import Gitea, RepoRef
from raibid_gitops.errors import GiteaNotFound
from raibid_gitops.gitops.layout import OVERLAY_DIR

pytestmark = pytest.mark.stack

#: The per-test Gitea repository + Flux objects of test_sync_stack.
flux_env = test_sync_stack.flux_env
#: A config repository pushed to a fresh Gitea repository, and the token in the environment.
env, api, ref, seeded = test_change_gitea.env, test_change_gitea.api, test_change_gitea.ref, test_change_gitea.seeded


def raibid(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raibid_gitops.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


# --- Flux: -C and -o on the cluster commands; status -o wide -------------------------------


class TestClusterCommands:
    def test_C_and_o_on_sync_status_diff_suspend_resume(self, flux_env: FluxEnv,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
        """FluxEnv.cli passes -C REPO; run from elsewhere, every command finds the repository."""
        rc, out, err = run(flux_env.sync("-o", "yaml"), capsys)
        assert rc == 0, err
        assert YAML(typ="safe").load(out)["commit"] == flux_env.head()
        for fmt in ("text", "table", "wide", "json", "yaml"):
            rc, out, err = run(flux_env.cli("status", "-o", fmt), capsys)
            assert rc == 0, err
            if fmt in ("json", "yaml"):
                data = json.loads(out) if fmt == "json" else YAML(typ="safe").load(out)
                assert data["head"] == flux_env.head()
            else:
                assert out.startswith("NAME") and f"kustomization/{flux_env.name}" in out
            rc, out, err = run(flux_env.cli("diff", "--ks", flux_env.name, "-o", fmt), capsys)
            assert rc == 0, err
            if fmt == "json":
                assert json.loads(out)["changed"] is False
        for verb, suspended in (("suspend", True), ("resume", False)):
            rc, out, err = run(flux_env.cli(verb, "kustomization", flux_env.name, "-o", "json"), capsys)
            assert rc == 0, err
            assert json.loads(out) == {"kind": "Kustomization", "namespace": flux_env.flux_ns,
                                       "name": flux_env.name, "suspended": suspended}
            assert bool(flux_env.ks()["spec"].get("suspend")) is suspended

    def test_status_wide_shows_the_cause(self, flux_env: FluxEnv, capsys: pytest.CaptureFixture[str]) -> None:
        kz = flux_env.repo / OVERLAY_DIR / "kustomization.yaml"
        kz.write_text(kz.read_text().replace("  - ../../base\n", "  - ../../base\n  - missing-patch-file.yaml\n"))
        _git(flux_env.repo, "commit", "-qam", "broken")
        # --no-verify: pushed although it does not build here, so that Flux is the one failing.
        rc, _, _ = run(flux_env.sync("--no-verify", "--timeout", "60s"), capsys)
        assert rc == 1
        rc, out, _ = run(flux_env.cli("status", "-o", "json"), capsys)
        message = next(o for o in json.loads(out)["objects"]
                       if o["kind"] == "Kustomization" and o["name"] == flux_env.name)["message"]
        message = " ".join(message.split())
        assert len(message) > 80 and "missing-patch-file.yaml" in message[-60:], message

        rc, out, err = run(flux_env.cli("status"), capsys)
        row = next(line for line in out.splitlines() if line.startswith(f"kustomization/{flux_env.name}"))
        assert "..." in row and message not in row
        assert message[-30:] in row, "the cut keeps the end of the message, where the cause is"
        assert "-o wide" in err

        rc, out, err = run(flux_env.cli("status", "-o", "wide"), capsys)
        row = next(line for line in out.splitlines() if line.startswith(f"kustomization/{flux_env.name}"))
        assert message in row and "-o wide" not in err


# --- Gitea: pr approve / close, set's "pushed" ---------------------------------------------


def _open_pr(seeded_repo: Path, env_: dict[str, str], value: str) -> tuple[int, subprocess.CompletedProcess]:
    r = raibid("gitops", "set", f"agents.maxReplicas={value}", "--pr", cwd=seeded_repo, env=env_)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip().splitlines()[-1].rsplit("/", 1)[1]), r


def _reviewer_token(gitea, api: Gitea, ref: RepoRef) -> str:
    """A token of a second user with write access to the repository."""
    name, password = f"rev-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    api.create_user(name, password)
    api.add_collaborator(ref, name, "write")
    with Gitea(gitea.url, basic_auth=(name, password)) as basic:
        return basic.create_token(name, "review")


class TestPullRequests:
    def test_approving_ones_own_pr_says_a_second_user_is_needed(self, seeded: Path, gitea, api: Gitea,
                                                                 ref: RepoRef, env: dict[str, str]):
        number, r = _open_pr(seeded, env, "6")
        assert "pushed it to branch raibid/set-agents.maxReplicas-6-" in r.stderr
        assert f"opened pull request #{number}" in r.stderr
        r = raibid("gitops", "pr", "approve", str(number), cwd=seeded, env=env)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "needs a second Gitea user" in r.stderr and "approve as another user" in r.stderr
        assert "Traceback" not in r.stderr and gitea.token not in r.stderr
        assert api.list_reviews(ref, number) == []
        # A second user, through the same command: approved.
        r = raibid("gitops", "pr", "approve", f"#{number}", "-o", "json", cwd=seeded,
                   env={**env, "RAIBID_GITEA_TOKEN": _reviewer_token(gitea, api, ref)})
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["state"] == "approved"
        assert [rv["state"] for rv in api.list_reviews(ref, number)] == ["APPROVED"]

    def test_close(self, seeded: Path, api: Gitea, ref: RepoRef, env: dict[str, str]):
        number, _ = _open_pr(seeded, env, "5")
        branch = api.get_pull(ref, number)["head"]["ref"]
        main_before = api.branch_head(ref, "main")
        r = raibid("gitops", "pr", "close", str(number), "--delete-branch", "-o", "json", cwd=seeded, env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"number": number, "repository": ref.full_name, "state": "closed",
                                        "wasClosed": False, "branch": branch, "branchDeleted": True}
        pull = api.get_pull(ref, number)
        assert pull["state"] == "closed" and not pull["merged"]
        assert api.branch_head(ref, "main") == main_before
        with pytest.raises(GiteaNotFound):
            api.get_branch(ref, branch)
        r = raibid("gitops", "pr", "close", str(number), cwd=seeded, env=env)
        assert r.returncode == 0 and "already closed" in r.stderr
        r = raibid("gitops", "pr", "list", "-o", "json", cwd=seeded, env=env)
        assert json.loads(r.stdout) == []

    def test_close_refuses_a_merged_or_missing_pr(self, seeded: Path, api: Gitea, ref: RepoRef,
                                                  env: dict[str, str]):
        number, _ = _open_pr(seeded, env, "7")
        api.merge_pull(ref, number)
        r = raibid("gitops", "pr", "close", str(number), cwd=seeded, env=env)
        assert r.returncode == 2 and "already merged" in r.stderr
        for missing in ("999999", "1" * 18):
            r = raibid("gitops", "pr", "close", missing, cwd=seeded, env=env)
            assert r.returncode == 2 and "does not exist" in r.stderr, r.stderr


class TestSetSaysPushed:
    def test_pushed_to_gitea(self, seeded: Path, api: Gitea, ref: RepoRef, env: dict[str, str]):
        r = raibid("gitops", "set", "agents.maxReplicas=4", cwd=seeded, env=env)
        assert r.returncode == 0, r.stderr
        sha = api.branch_head(ref, "main")
        assert f"committed {sha[:12]} and pushed it to main" in r.stderr
        assert json.loads(raibid("gitops", "set", "agents.maxReplicas=3", "-o", "json", cwd=seeded,
                                 env=env).stdout)["pushed"] is True

    def test_local_only_is_not_pushed(self, seeded: Path, api: Gitea, ref: RepoRef, env: dict[str, str]):
        _git(seeded, "remote", "remove", "origin")
        remote_before = api.branch_head(ref, "main")
        r = raibid("gitops", "set", "agents.maxReplicas=4", cwd=seeded, env=env)
        assert r.returncode == 0, r.stderr
        assert "on the local branch only: not pushed" in r.stderr and "pushed it" not in r.stderr
        assert api.branch_head(ref, "main") == remote_before
        r = raibid("gitops", "set", "agents.maxReplicas=5", "--dry-run", cwd=seeded, env=env)
        assert "pushed" not in r.stderr.replace("not pushed", "")


# --- the agent's kubeconfig -------------------------------------------------------------------


@pytest.fixture
def settings_configmap(kube, kube_namespace: str) -> str:
    from raibid_gitops.clients.kube import connect

    connect(str(kube.kubeconfig)).request(
        "POST", f"/api/v1/namespaces/{kube_namespace}/configmaps", what="ConfigMap raibid-settings",
        body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "raibid-settings"},
              "data": {"settings.yaml": FAST_SETTINGS}})
    return kube_namespace


class TestAgentKubeconfig:
    """`raibid-agent --settings-configmap` finds the API as the CLI does: --kubeconfig, then
    $KUBECONFIG, then ~/.kube/config, then the in-cluster service account — also in a Pod-like
    environment (KUBERNETES_SERVICE_HOST set), where it used to go in-cluster at once."""

    def _agent(self, redis_server, namespace: str, home: Path, *extra: str, **env_: str) -> tuple[int, str]:
        env_all = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "RAIBID_REDIS_URL")}
        env_all.update(HOME=str(home), KUBERNETES_SERVICE_HOST="10.96.0.1", KUBERNETES_SERVICE_PORT="443",
                       RAIBID_REDIS_PASSWORD=redis_server.password, **env_)
        proc = subprocess.run([sys.executable, "-m", "raibid_agent.main", "--settings-configmap", "-n", namespace,
                               "--once", "--redis-url", redis_server.url, "--agent-id", "kc-agent",
                               "--gitea-token-file", "/nonexistent", *extra],
                              env=env_all, capture_output=True, text=True, timeout=120)
        return proc.returncode, proc.stdout + proc.stderr

    def test_kubeconfig_env(self, kube, redis_server, settings_configmap: str, tmp_path: Path):
        rc, log = self._agent(redis_server, settings_configmap, tmp_path, KUBECONFIG=str(kube.kubeconfig))
        assert rc == 0, log
        assert "agent kc-agent up" in log

    def test_home_kube_config(self, kube, redis_server, settings_configmap: str, tmp_path: Path):
        (tmp_path / ".kube").mkdir()
        shutil.copy(kube.kubeconfig, tmp_path / ".kube" / "config")
        rc, log = self._agent(redis_server, settings_configmap, tmp_path)
        assert rc == 0, log
        assert "agent kc-agent up" in log

    def test_explicit_and_missing(self, kube, redis_server, settings_configmap: str, tmp_path: Path):
        rc, log = self._agent(redis_server, settings_configmap, tmp_path, "--kubeconfig", str(kube.kubeconfig),
                              KUBECONFIG="/nonexistent/kubeconfig")
        assert rc == 0, log
        rc, log = self._agent(redis_server, settings_configmap, tmp_path, KUBECONFIG=str(tmp_path / "nope"))
        assert rc == 2 and "does not exist" in log and "Traceback" not in log
        # Nothing else left: the in-cluster service account, which this is not.
        rc, log = self._agent(redis_server, settings_configmap, tmp_path)
        assert rc == 2 and "cannot load the Kubernetes configuration" in log and "Traceback" not in log
