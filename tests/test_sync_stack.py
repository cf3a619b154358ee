"""`raibid gitops sync` / `suspend` / `resume` against the real local stack: Gitea, kube-apiserver
and the Flux source- and kustomize-controllers.

Every test gets its own Gitea repository, its own Flux namespace with its own GitRepository and
Kustomization, and its own workload namespace (``cluster.namespace``), so tests do not see each
other's objects. The Kustomizations wait for health (``wait: true``) as the generated one does: the
stack's controller-manager, scheduler and KWOK node make Redis's StatefulSet Available, and the
KEDA operator must accept each ScaledJob (its Redis is the stack's, reached through
``redis_service``).
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from raibid_gitops.cli import main
from raibid_gitops.clients import kube as kube_mod
from raibid_gitops.clients.kube import Kube, ObjectRef
from raibid_gitops.errors import KubeError
from raibid_gitops.gitops import flux
from raibid_gitops.gitops.generate import init
from raibid_gitops.gitops.layout import OVERLAY_DIR, SETTINGS_PATH

pytestmark = pytest.mark.stack

#: First reconcile of a fresh GitRepository + Kustomization: well under 10 s on 2 busy cores.
SETUP_TIMEOUT = 90


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class FluxEnv:
    """One config repository on Gitea, Flux objects following it, and a kube client."""

    name: str
    flux_ns: str
    workload_ns: str
    repo: Path
    clone_url: str
    kube: Kube
    kubeconfig: str
    gitea: Any

    def cli(self, *args: str, repo: bool = True) -> list[str]:
        where = ["-C", str(self.repo)] if repo else []
        return ["gitops", *args, *where, "--kubeconfig", self.kubeconfig, "-n", self.flux_ns]

    def sync(self, *args: str) -> list[str]:
        return self.cli("sync", "--ks", self.name, *args)

    @property
    def ks_ref(self) -> ObjectRef:
        return ObjectRef(flux.KUSTOMIZE_API, flux.KUSTOMIZATION, self.name, self.flux_ns)

    @property
    def source_ref(self) -> ObjectRef:
        return ObjectRef(flux.SOURCE_API, flux.GIT_REPOSITORY, self.name, self.flux_ns)

    def ks(self) -> dict[str, Any]:
        return self.kube.get(self.ks_ref)

    def head(self) -> str:
        return _git(self.repo, "rev-parse", "HEAD")

    def commit_setting(self, old: str, new: str, message: str = "change") -> str:
        path = self.repo / SETTINGS_PATH
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new, 1))
        _git(self.repo, "commit", "-qam", message)
        return self.head()

    def push(self, repo: Path | None = None) -> None:
        _git(repo or self.repo, *self.gitea_auth(), "push", "-q", "origin", "HEAD:refs/heads/main")

    def gitea_auth(self) -> list[str]:
        basic = base64.b64encode(f"{self.gitea.admin_user}:{self.gitea.token}".encode()).decode()
        return ["-c", f"http.extraHeader=Authorization: Basic {basic}"]

    def remote_head(self) -> str:
        out = _git(self.repo, *self.gitea_auth(), "ls-remote", "origin", "refs/heads/main")
        return out.split()[0] if out else ""


def _gitea_api(gitea: Any, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    resp = requests.request(method, f"{gitea.url}/api/v1{path}", json=body, timeout=30,
                            headers={"Authorization": f"token {gitea.token}"})
    if resp.status_code >= 400 and not (method == "DELETE" and resp.status_code == 404):
        raise AssertionError(f"Gitea {method} {path}: {resp.status_code} {resp.text[:300]}")
    return resp.json() if resp.content else None


def create_gitea_repo(gitea: Any, name: str) -> str:
    repo = _gitea_api(gitea, "POST", f"/orgs/{gitea.org}/repos",
                      {"name": name, "private": True, "auto_init": False, "default_branch": "main"})
    return str(repo["clone_url"])


def make_env(kube_stack: Any, gitea: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             redis_service: Any) -> FluxEnv:
    """A config repo pushed to a new Gitea repo, and Flux objects applying it; waits for the
    first Ready."""
    name = "t" + uuid.uuid4().hex[:8]
    flux_ns, workload_ns = f"{name}-flux", f"{name}-ci"
    url = create_gitea_repo(gitea, name)
    repo = tmp_path / name
    redis = redis_service(workload_ns)
    init(repo, remote=url, assignments=[
        f"cluster.namespace={workload_ns}", f"queue.redisAddress={redis.address}",
        "flux.interval=10m", f"gitea.url={gitea.url}", f"gitea.repo={name}",
    ])
    kubeconfig = str(kube_stack.kubeconfig)
    kube = kube_mod.connect(kubeconfig)
    env = FluxEnv(name, flux_ns, workload_ns, repo, url, kube, kubeconfig, gitea)
    env.push()
    monkeypatch.setenv("RAIBID_GITEA_TOKEN", gitea.token)
    monkeypatch.setenv("RAIBID_GITEA_USER", gitea.admin_user)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    kube.request("POST", "/api/v1/namespaces", what=f"Namespace {flux_ns}",
                 body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": flux_ns}})
    kube.request("POST", f"/api/v1/namespaces/{flux_ns}/secrets", what="Secret auth",
                 body={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "auth"},
                       "stringData": {"username": gitea.admin_user, "password": gitea.token}})
    # A long interval: in these tests only sync's requests (and source changes) reconcile.
    for obj in (flux.git_repository(name, flux_ns, url=url, interval="10m", secret="auth"),
                flux.kustomization(name, flux_ns, source=name, interval="10m", wait=True)):
        res = kube.resource(obj["apiVersion"], obj["kind"])
        kube.request("POST", res.path(flux_ns), what=f"{obj['kind']} {name}", body=obj)
    kube_mod.wait_for(kube, env.ks_ref, lambda o: flux.is_ready(o) and bool(flux.applied_revision(o)),
                      timeout=SETUP_TIMEOUT)
    return env


def destroy_env(env: FluxEnv) -> None:
    # Best effort: the stack is thrown away at the end of the session anyway.
    for ref in (env.ks_ref, env.source_ref):
        with contextlib.suppress(KubeError):
            res = env.kube.resource(ref.api_version, ref.kind)
            env.kube.request("DELETE", res.path(ref.namespace, ref.name), what=str(ref))
    _gitea_api(env.gitea, "DELETE", f"/repos/{env.gitea.org}/{env.name}")


@pytest.fixture
def flux_env(kube: Any, flux: Any, gitea: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             redis_service: Any) -> Iterator[FluxEnv]:
    env = make_env(kube, gitea, tmp_path, monkeypatch, redis_service)
    yield env
    destroy_env(env)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------------------------


class TestSync:
    """sync pushes, waits for the exact commit, and reports Flux's failures."""

    def test_good_change_reaches_ready_at_its_commit(self, flux_env: FluxEnv,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
        sha = flux_env.commit_setting("heartbeatSeconds: 15", "heartbeatSeconds: 20")
        rc, out, err = run(flux_env.sync("--timeout", "60s"), capsys)
        assert rc == 0, err
        assert flux_env.remote_head() == sha  # sync pushed it
        ks = flux_env.ks()
        assert flux.applied_revision(ks) == f"main@sha1:{sha}"
        assert flux.is_ready(ks)
        assert f"applied {sha[:12]}" in out
        assert "pushed 1 commit(s)" in err and "request" in err and "source" in err
        cm = flux_env.kube.get(ObjectRef("v1", "ConfigMap", "raibid-settings", flux_env.workload_ns))
        assert "heartbeatSeconds: 20" in cm["data"]["settings.yaml"]

    def test_nothing_to_push_still_waits_for_head(self, flux_env: FluxEnv, capsys: pytest.CaptureFixture[str]) -> None:
        rc, out, err = run(flux_env.sync("-o", "json"), capsys)
        assert rc == 0, err
        import json

        data = json.loads(out)
        assert data["commit"] == flux_env.head() and data["pushed"] is False

    def test_no_push_waits_for_the_remote(self, flux_env: FluxEnv, capsys: pytest.CaptureFixture[str]) -> None:
        remote = flux_env.remote_head()
        flux_env.commit_setting("heartbeatSeconds: 15", "heartbeatSeconds: 20")
        rc, out, err = run(flux_env.sync("--no-push", "--timeout", "60s"), capsys)
        assert rc == 0, err
        assert "1 local commit(s) not pushed (--no-push)" in err
        assert f"applied {remote[:12]}" in out
        assert flux_env.remote_head() == remote

    def test_broken_manifest_fails_with_kustomize_message(self, flux_env: FluxEnv,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
        before = flux.applied_revision(flux_env.ks())
        kz = flux_env.repo / OVERLAY_DIR / "kustomization.yaml"
        kz.write_text(kz.read_text().replace("  - ../../base\n", "  - ../../base\n  - missing-patch.yaml\n"))
        _git(flux_env.repo, "commit", "-qam", "broken: reference a missing file")
        sha = flux_env.head()
        # sync itself refuses to push what verify rejects (tested in test_operator_stack.py);
        # here the commit reaches Flux anyway, to see Flux's own verdict reported.
        rc, _, err = run(flux_env.sync("--no-verify", "--timeout", "60s"), capsys)
        assert rc == 1, err
        assert "BuildFailed" in err and "missing-patch.yaml" in err
        assert f"lastAttemptedRevision main@sha1:{sha[:12]}" in err and "lastAppliedRevision" in err
        ks = flux_env.ks()
        assert flux.applied_revision(ks) == before and flux.attempted_revision(ks) == f"main@sha1:{sha}"

    def test_behind_the_remote_fast_forwards_and_waits_for_the_remote_head(
            self, flux_env: FluxEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        first = flux_env.commit_setting("heartbeatSeconds: 15", "heartbeatSeconds: 20", "first")
        flux_env.push()
        other = tmp_path / "other"
        _git(tmp_path, *flux_env.gitea_auth(), "clone", "-q", flux_env.clone_url, str(other))
        (other / "NOTES.md").write_text("second\n")
        _git(other, "add", "NOTES.md")
        _git(other, "commit", "-qm", "second")
        second = _git(other, "rev-parse", "HEAD")
        flux_env.push(other)
        # The local clone is at `first`, behind origin: sync fast-forwards it to `second` and
        # waits for that, so what it reports is what the cluster runs.
        rc, out, err = run(flux_env.sync("--timeout", "60s"), capsys)
        assert rc == 0, err
        assert f"fast-forwarded main from {first[:12]} to origin/main at {second[:12]}" in err
        assert flux_env.head() == second
        assert flux.applied_revision(flux_env.ks()) == f"main@sha1:{second}"
        assert f"applied {second[:12]}" in out

    def test_behind_with_changes_in_the_way_says_what_it_waits_for(
            self, flux_env: FluxEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        first = flux_env.head()
        other = tmp_path / "other"
        _git(tmp_path, *flux_env.gitea_auth(), "clone", "-q", flux_env.clone_url, str(other))
        (other / "NOTES.md").write_text("theirs\n")
        _git(other, "add", "NOTES.md")
        _git(other, "commit", "-qm", "theirs")
        second = _git(other, "rev-parse", "HEAD")
        flux_env.push(other)
        (flux_env.repo / "NOTES.md").write_text("mine, not committed\n")  # in the fast-forward's way
        rc, out, err = run(flux_env.sync("--timeout", "60s"), capsys)
        assert rc == 0, err
        assert "could not be fast-forwarded" in err and f"not your HEAD {first[:12]}" in err
        assert flux_env.head() == first and f"applied {second[:12]}" in out

    def test_diverged_branch_refused(self, flux_env: FluxEnv, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
        other = tmp_path / "other"
        _git(tmp_path, *flux_env.gitea_auth(), "clone", "-q", flux_env.clone_url, str(other))
        (other / "NOTES.md").write_text("theirs\n")
        _git(other, "add", "NOTES.md")
        _git(other, "commit", "-qm", "theirs")
        flux_env.push(other)
        theirs = _git(other, "rev-parse", "HEAD")
        flux_env.commit_setting("heartbeatSeconds: 15", "heartbeatSeconds: 20", "ours")
        rc, _, err = run(flux_env.sync(), capsys)
        assert rc == 2
        assert "diverged" in err and "does not force-push" in err and "git pull --rebase" in err
        assert flux_env.remote_head() == theirs

    def test_timeout_has_its_own_exit_code(self, kube: Any, flux: Any, gitea: Any, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, redis_service: Any,
                                           capsys: pytest.CaptureFixture[str]) -> None:
        # Flux follows a mirror that never receives our pushes: the commit never arrives.
        mirror = "m" + uuid.uuid4().hex[:8]
        mirror_url = create_gitea_repo(gitea, mirror)
        env = make_env(kube, gitea, tmp_path, monkeypatch, redis_service)
        try:
            _git(env.repo, *env.gitea_auth(), "push", "-q", mirror_url, "HEAD:refs/heads/main")
            env.kube.patch(env.source_ref, {"spec": {"url": mirror_url}})
            env.commit_setting("heartbeatSeconds: 15", "heartbeatSeconds: 20")
            rc, _, err = run(env.sync("--timeout", "4s"), capsys)
            assert rc == 3, err
            assert "timed out after 4s" in err and env.head()[:12] in err
            assert f"Flux fetched {mirror_url} after the push" in err
        finally:
            destroy_env(env)
            _gitea_api(gitea, "DELETE", f"/repos/{gitea.org}/{mirror}")

    def test_suspended_kustomization_refused_then_resumed(self, flux_env: FluxEnv,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
        rc, _, err = run(flux_env.cli("suspend", "kustomization", flux_env.name, repo=False), capsys)
        assert rc == 0 and "suspended" in err
        assert flux.is_suspended(flux_env.ks())
        before = flux_env.remote_head()
        flux_env.commit_setting("heartbeatSeconds: 15", "heartbeatSeconds: 20")
        rc, _, err = run(flux_env.sync("--timeout", "30s"), capsys)
        assert rc == 2
        assert f"Kustomization {flux_env.flux_ns}/{flux_env.name} is suspended" in err
        assert "raibid gitops resume" in err
        assert flux_env.remote_head() == before  # refused before pushing anything
        rc, _, err = run(flux_env.cli("resume", "ks", flux_env.name, repo=False), capsys)
        assert rc == 0
        assert not flux.is_suspended(flux_env.ks())
        rc, _, err = run(flux_env.sync("--timeout", "60s"), capsys)
        assert rc == 0, err

    def test_follows_depends_on(self, flux_env: FluxEnv, capsys: pytest.CaptureFixture[str]) -> None:
        # A dependency Kustomization from the same repository, applying its own namespace.
        dep = f"{flux_env.name}-dep"
        deps = flux_env.repo / "deps"
        deps.mkdir()
        (deps / "kustomization.yaml").write_text("resources:\n  - ns.yaml\n")
        (deps / "ns.yaml").write_text(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {dep}\n")
        _git(flux_env.repo, "add", "deps")
        _git(flux_env.repo, "commit", "-qm", "add a dependency")
        flux_env.push()
        obj = flux.kustomization(dep, flux_env.flux_ns, source=flux_env.name, path="./deps", interval="10m")
        res = flux_env.kube.resource(obj["apiVersion"], obj["kind"])
        flux_env.kube.request("POST", res.path(flux_env.flux_ns), what=dep, body=obj)
        flux_env.kube.patch(flux_env.ks_ref, {"spec": {"dependsOn": [{"name": dep}]}})
        sha = flux_env.commit_setting("heartbeatSeconds: 15", "heartbeatSeconds: 20")
        rc, out, err = run(flux_env.sync("--timeout", "60s", "-o", "json"), capsys)
        assert rc == 0, err
        import json

        applied = json.loads(out)["kustomizations"]
        assert list(applied) == [f"{flux_env.flux_ns}/{dep}", f"{flux_env.flux_ns}/{flux_env.name}"]
        assert set(applied.values()) == {f"main@sha1:{sha}"}
        assert err.index(f"Kustomization {flux_env.flux_ns}/{dep} applied") < err.index(
            f"Kustomization {flux_env.flux_ns}/{flux_env.name} applied")
        # A suspended dependency is refused too.
        flux_env.kube.patch(ObjectRef(flux.KUSTOMIZE_API, flux.KUSTOMIZATION, dep, flux_env.flux_ns),
                            {"spec": {"suspend": True}})
        rc, _, err = run(flux_env.sync(), capsys)
        assert rc == 2 and f"Kustomization {flux_env.flux_ns}/{dep} is suspended" in err
        flux_env.kube.request("DELETE", res.path(flux_env.flux_ns, dep), what=dep)

    def test_missing_kustomization_named(self, flux_env: FluxEnv, capsys: pytest.CaptureFixture[str]) -> None:
        rc, _, err = run(flux_env.cli("sync", "--ks", "nope"), capsys)
        assert rc == 2
        assert f"Kustomization {flux_env.flux_ns}/nope not found" in err


class TestWaitAgents:
    """--wait-agents reads the agents' heartbeat hashes in a real Redis."""

    def test_no_agent_running_says_so(self, flux_env: FluxEnv, redis_server: Any, redis_client: Any,
                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        monkeypatch.setenv("RAIBID_REDIS_PASSWORD", redis_server.password)
        flux_env.commit_setting("heartbeatSeconds: 15", "heartbeatSeconds: 20")
        rc, _, err = run(flux_env.sync("--wait-agents", "--redis-url", redis_server.url, "--timeout", "60s"), capsys)
        assert rc == 0, err
        assert "no agent is running" in err

    def test_waits_until_a_real_agent_runs_the_new_settings(self, flux_env: FluxEnv, redis_server: Any,
                                                            redis_client: Any, cm_agents: Any,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
        """A real `raibid-agent --settings-configmap` watching the ConfigMap Flux applies: sync
        returns once the agent's own heartbeat reports the new commit's settings hash."""
        from raibid_gitops import contract
        from raibid_gitops.settings import load_path

        monkeypatch.setenv("RAIBID_REDIS_PASSWORD", redis_server.password)
        old_hash = load_path(flux_env.repo / SETTINGS_PATH).hash()
        cm_agents.start("cm-agent", old_hash)
        sha = flux_env.commit_setting("heartbeatSeconds: 15", "heartbeatSeconds: 20")
        new_hash = load_path(flux_env.repo / SETTINGS_PATH).hash()
        assert new_hash != old_hash
        rc, out, err = run(flux_env.sync("--wait-agents", "--redis-url", redis_server.url, "--timeout", "90s",
                                         "-o", "json"), capsys)
        assert rc == 0, err + cm_agents.logs()
        import json

        data = json.loads(out)
        assert data["commit"] == sha
        assert data["agents"] == {"settingsHash": new_hash, "agents": {"cm-agent": new_hash}, "note": None}
        beat = redis_client.hgetall(contract.agent_key("cm-agent"))
        assert (beat[contract.AGENT_SETTINGS_HASH], beat[contract.AGENT_SETTINGS_GENERATION]) == (new_hash, "2")
        assert f"settings {new_hash} applied" in cm_agents.logs()

    def test_an_agent_refusing_the_settings_fails_the_sync_naming_it(self, flux_env: FluxEnv, redis_server: Any,
                                                                     cm_agents: Any, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
        """Settings the agent refuses (3 x heartbeatSeconds above claimIdleSeconds) are pushed by
        hand and applied by Flux: sync fails with exit 1, naming the agent and its reason."""
        from raibid_gitops.settings import load_path

        monkeypatch.setenv("RAIBID_REDIS_PASSWORD", redis_server.password)
        old_hash = load_path(flux_env.repo / SETTINGS_PATH).hash()
        cm_agents.start("picky-agent", old_hash)
        sha = flux_env.commit_setting("heartbeatSeconds: 15", "heartbeatSeconds: 120", message="too slow")
        rc, _, err = run(flux_env.sync("--wait-agents", "--redis-url", redis_server.url, "--timeout", "90s",
                                       "--no-verify"), capsys)
        assert rc == 1, err + cm_agents.logs()
        assert f"agent picky-agent refused the settings of {sha[:12]} and keeps {old_hash}: " in err
        assert "claimIdleSeconds" in err.split("refused the settings", 1)[1]
        assert flux.applied_revision(flux_env.ks()) == f"main@sha1:{sha}", "Flux did apply the commit"
        assert "refused settings version" in cm_agents.logs()


class ConfigMapAgents:
    """Real `raibid-agent --settings-configmap` processes watching a FluxEnv's ConfigMap."""

    def __init__(self, env: FluxEnv, redis_server: Any, redis_client: Any, logdir: Path) -> None:
        self.env, self.redis_server, self.redis_client, self.logdir = env, redis_server, redis_client, logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, agent_id: str, expect_hash: str) -> None:
        """Start one and wait until its heartbeat reports ``expect_hash`` (it read the ConfigMap)."""
        import os
        import sys
        import time

        from raibid_gitops import contract

        log = open(self.logdir / f"{agent_id}.log", "ab")
        env = dict(os.environ, RAIBID_REDIS_PASSWORD=self.redis_server.password, PYTHONUNBUFFERED="1")
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "raibid_agent.main", "--settings-configmap", "-n", self.env.workload_ns,
             "--kubeconfig", self.env.kubeconfig, "--redis-url", self.redis_server.url, "--agent-id", agent_id,
             "--gitea-token-file", "/nonexistent"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        log.close()
        key = contract.agent_key(agent_id)
        deadline = time.monotonic() + 60
        while self.redis_client.hget(key, contract.AGENT_SETTINGS_HASH) != expect_hash:
            if self.procs[-1].poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"agent {agent_id} did not report settings {expect_hash}:\n{self.logs()}")
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob("*.log")))

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(10)


@pytest.fixture
def cm_agents(flux_env: FluxEnv, redis_server: Any, redis_client: Any, tmp_path: Path) -> Iterator[ConfigMapAgents]:
    logdir = tmp_path / "agent-logs"
    logdir.mkdir()
    pool = ConfigMapAgents(flux_env, redis_server, redis_client, logdir)
    yield pool
    pool.stop()
