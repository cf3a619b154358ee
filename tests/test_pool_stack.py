"""The whole loop on the local stack: a number committed in git governs how many agent Jobs
KEDA runs.

Real components only: Gitea holds the config repository; Flux (source-, kustomize-controller)
applies it with ``wait: true``; kube-controller-manager, kube-scheduler and a KWOK node make
Redis's StatefulSet Available and give KEDA's Jobs Pods; the KEDA operator (v2.21.0) reads the
job stream's lag from a real redis-server and creates the Jobs; the real ``raibid-agent``
takes a job as the agent in a Pod would.

KWOK runs no containers: an agent Pod is Running but nothing in it consumes the stream, so the
lag KEDA sees stays as submitted, which is what lets these tests count Jobs against
``maxReplicas``. Where a test needs the job consumed, it starts the agent itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from raibid_gitops.devstack.processes import FluxControllers, GiteaServer, KubeStack, StackError, describe_logs

pytestmark = pytest.mark.stack

#: KEDA looks at the stream this often in these tests (scaling.pollingInterval).
POLL = 3
#: Flux's first apply of a fresh repository with wait: true (Redis's Pod scheduled and made
#: Ready by KWOK, its PVC bound, KEDA Ready): ~10 s here; the margin is for a busy machine.
APPLY_TIMEOUT = 240


def _raibid(*args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "raibid_gitops.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env=env)
    if check:
        assert proc.returncode == 0, f"raibid {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc


@dataclass
class Pool:
    """A generated config repository on Gitea, applied by Flux into its own namespace."""

    kube: KubeStack
    flux: FluxControllers
    gitea: GiteaServer
    keda: Any
    namespace: str
    repo: Path
    owner: str
    name: str
    redis: Any
    env: dict[str, str]
    tmp: Path

    # -- commands ------------------------------------------------------------------------------

    def raibid(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _raibid(*args, cwd=self.repo, env=self.env, check=check)

    def git(self, *args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=self.repo, env=self.gitea.git_env(self.env), capture_output=True,
                              text=True)
        assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return proc.stdout.strip()

    def sync(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.raibid("gitops", "sync", "--timeout", f"{APPLY_TIMEOUT}s", *extra, check=check)

    def submit(self, n: int = 1) -> list[str]:
        ids = []
        for _ in range(n):
            out = self.raibid("queue", "submit", "--repo", f"{self.owner}/app", "--ref", "main").stdout
            ids.append(out.strip())
        return ids

    # -- what the cluster runs ------------------------------------------------------------------

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kube.kubectl("get", *args, "-o", "json"))

    def jobs(self) -> list[dict[str, Any]]:
        return self.get("jobs", "-n", self.namespace, "-l", "scaledjob.keda.sh/name=raibid-agent")["items"]

    def pods(self) -> list[dict[str, Any]]:
        return self.get("pods", "-n", self.namespace, "-l", "app.kubernetes.io/name=raibid-agent")["items"]

    def scaled_job(self) -> dict[str, Any]:
        return self.get("scaledjob", "raibid-agent", "-n", self.namespace)

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{self.diagnostics()}")
            time.sleep(0.25)

    def job_count_over(self, seconds: float) -> set[int]:
        """Every agent-Job count seen while watching for ``seconds`` (several KEDA polls)."""
        seen = set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            seen.add(len(self.jobs()))
            time.sleep(0.5)
        return seen

    def diagnostics(self) -> str:
        parts = []
        for args in (("kustomization", "raibid-config", "-n", "flux-system"),
                     ("scaledjob", "raibid-agent", "-n", self.namespace)):
            try:
                obj = self.get(*args)
                parts.append(f"{args[0]}: {json.dumps(obj.get('status', {}), indent=1)[:1500]}")
            except StackError as exc:
                parts.append(f"{args[0]}: {exc}")
        keda_log = self.keda.log_text().splitlines()[-25:]
        return "\n".join(parts) + "\n--- keda-operator (tail) ---\n" + "\n".join(keda_log)


@pytest.fixture
def pool(kube: KubeStack, flux: FluxControllers, gitea: GiteaServer, keda: Any, redis_service: Any,
         tmp_path: Path) -> Iterator[Pool]:
    """`raibid gitops init` with default settings except names and a short pollingInterval,
    pushed to Gitea; the Flux objects of clusters/dgx-spark applied as bootstrap does; waits
    until Flux has applied the first commit (wait: true) and KEDA accepted the ScaledJob."""
    namespace = f"p-{uuid.uuid4().hex[:8]}"
    name = f"cfg-{uuid.uuid4().hex[:8]}"
    clone_url = str(gitea.api("POST", f"/orgs/{gitea.org}/repos",
                              {"name": name, "private": True, "auto_init": False, "default_branch": "main"})["clone_url"])
    svc = redis_service(namespace)
    env = {**os.environ, "RAIBID_GITEA_TOKEN": gitea.token, "RAIBID_GITEA_USER": gitea.admin_user,
           "KUBECONFIG": str(kube.kubeconfig), "RAIBID_REDIS_URL": svc.server.url,
           "RAIBID_REDIS_PASSWORD": svc.server.password, "GIT_TERMINAL_PROMPT": "0"}
    repo = tmp_path / "config"
    _raibid("gitops", "init", str(repo), "--remote", clone_url,
            "--set", f"cluster.namespace={namespace}", "--set", f"queue.redisAddress={svc.address}",
            "--set", f"gitea.url={gitea.url}", "--set", f"gitea.owner={gitea.org}", "--set", f"gitea.repo={name}",
            "--set", f"scaling.pollingInterval={POLL}", cwd=tmp_path, env=env)
    _make_app_repo(gitea, tmp_path)
    p = Pool(kube, flux, gitea, keda, namespace, repo, gitea.org, name, svc.server, env, tmp_path)
    p.git("push", "-q", "origin", "main")
    kube.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raibid-config-auth", "namespace": "flux-system"},
        "stringData": {"username": gitea.admin_user, "password": gitea.token}}))
    kube.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raibid-gitea", "namespace": namespace},
        "stringData": {"token": gitea.token}}))
    kube.kubectl("apply", "-k", str(repo / "clusters" / "dgx-spark"))
    try:
        p.sync()
        yield p
    finally:
        _teardown(p)


def _make_app_repo(gitea: GiteaServer, tmp: Path) -> None:
    """raibid/app: what the CI jobs build (a Makefile whose `test` succeeds)."""
    try:
        gitea.api("POST", f"/orgs/{gitea.org}/repos", {"name": "app", "private": True, "default_branch": "main"})
    except StackError:
        return  # made by an earlier test of this session
    work = tmp / "app"
    work.mkdir()
    (work / "Makefile").write_text("test:\n\t@echo ok\n")
    env = gitea.git_env()
    for args in (["init", "-q", "-b", "main"], ["add", "."],
                 ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "app"],
                 ["push", "-q", f"{gitea.url}/{gitea.org}/app.git", "main"]):
        subprocess.run(["git", *args], cwd=work, env=env, check=True, capture_output=True)


def _teardown(p: Pool) -> None:
    """Delete the Flux objects (prune removes the namespace and everything in it, which the
    namespace controller now finishes) and the repository."""
    try:
        p.kube.kubectl("delete", "kustomization,gitrepository", "raibid-config", "-n", "flux-system",
                       "--ignore-not-found", "--timeout=120s")
        p.kube.kubectl("delete", "namespace", p.namespace, "--ignore-not-found", "--timeout=120s")
        p.kube.kubectl("delete", "secret", "raibid-config-auth", "-n", "flux-system", "--ignore-not-found")
    finally:
        p.gitea.api("DELETE", f"/repos/{p.owner}/{p.name}", expect=(204, 404))


def _agent(p: Pool, log: Path) -> subprocess.Popen[bytes]:
    """The real agent as a ScaledJob Pod would run it (--once), settings from the ConfigMap
    Flux applied, Redis and Gitea of the stack."""
    token = p.tmp / "gitea-token"
    token.write_text(p.gitea.token)
    pw = p.tmp / "redis-password"
    pw.write_text(p.redis.password)
    out = open(log, "ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "raibid_agent.main", "--once", "--settings-configmap", "-n", p.namespace,
             "--kubeconfig", str(p.kube.kubeconfig), "--redis-url", p.redis.url, "--redis-password-file", str(pw),
             "--gitea-token-file", str(token), "--agent-id", f"agent-{uuid.uuid4().hex[:6]}",
             "--workdir", str(p.tmp)],
            env=p.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        out.close()


class TestDefaultRepositoryIsReady:
    """`flux.wait: true` (the default users get) reaches Ready at the pushed commit."""

    def test_ready_with_redis_available(self, pool: Pool) -> None:
        ks = pool.get("kustomization", "raibid-config", "-n", "flux-system")
        head = pool.git("rev-parse", "HEAD")
        assert ks["spec"]["wait"] is True
        assert ks["status"]["lastAppliedRevision"] == f"main@sha1:{head}"
        sts = pool.get("statefulset", "raibid-redis", "-n", pool.namespace)
        assert sts["status"].get("readyReplicas") == 1 == sts["status"].get("availableReplicas")
        redis_pod = pool.get("pod", "raibid-redis-0", "-n", pool.namespace)
        assert redis_pod["spec"]["nodeName"] == "dgx-spark-1"  # placed by kube-scheduler
        pvc = pool.get("pvc", "data-raibid-redis-0", "-n", pool.namespace)
        assert pvc["status"]["phase"] == "Bound"
        sj = pool.scaled_job()
        ready = {c["type"]: c for c in sj["status"]["conditions"]}["Ready"]
        assert ready["status"] == "True", ready
        assert pool.jobs() == []  # scale from zero: nothing queued, no agent


class TestScaling:
    """KEDA creates the agent Jobs the committed settings call for."""

    def test_one_job_wakes_exactly_one_agent(self, pool: Pool, tmp_path: Path) -> None:
        assert pool.job_count_over(2 * POLL) == {0}
        job_id = pool.submit(1)[0]
        pool.wait("KEDA's first agent Job", lambda: len(pool.jobs()) >= 1, timeout=60)
        # The agent in that Pod takes the job (KWOK runs no container: we run it).
        agent = _agent(pool, tmp_path / "agent.log")
        try:
            assert agent.wait(120) == 0, (tmp_path / "agent.log").read_text()
        finally:
            if agent.poll() is None:
                agent.kill()
        status = json.loads(pool.raibid("queue", "status", job_id, "-o", "json").stdout)
        assert status["state"] == "succeeded", status
        # Several KEDA polls later there is still exactly the one Job (activationLagCount "0":
        # one queued job woke the pool; lag 0 since the agent took it).
        assert pool.job_count_over(3 * POLL) == {1}, pool.diagnostics()

    def test_committed_threshold_governs_the_pool(self, pool: Pool) -> None:
        # A reviewed change: pull request, merge, sync.
        out = pool.raibid("gitops", "set", "agents.maxReplicas=3", "scaling.lagCount=2", "--pr").stdout
        number = _pr_number(pool)
        pool.raibid("gitops", "pr", "merge", str(number))
        pool.git("pull", "-q", "--ff-only", "origin", "main")
        pool.sync()
        sj = pool.scaled_job()
        assert sj["spec"]["maxReplicaCount"] == 3 and sj["spec"]["triggers"][0]["metadata"]["lagCount"] == "2", out

        pool.submit(10)
        pool.wait("3 agent Jobs", lambda: len(pool.jobs()) >= 3, timeout=60)
        assert pool.job_count_over(4 * POLL) == {3}, pool.diagnostics()

        # A direct commit raises the cap: exactly 5, never more.
        pool.raibid("gitops", "set", "agents.maxReplicas=5")
        pool.sync()
        pool.wait("5 agent Jobs", lambda: len(pool.jobs()) >= 5, timeout=60)
        assert pool.job_count_over(4 * POLL) == {5}, pool.diagnostics()

        # What `status` shows: the pool as it is beside the pool as committed.
        data = json.loads(pool.raibid("gitops", "status", "-o", "json").stdout)
        [p] = [x for x in data["pools"] if x["namespace"] == pool.namespace]
        assert p["maxReplicas"] == 5 and p["jobs"]["active"] == 5 and p["keda"] == "accepted"

    def test_pods_carry_what_the_scaledjob_renders(self, pool: Pool) -> None:
        settings = json.loads(pool.raibid("gitops", "get", "-o", "json").stdout)
        pool.submit(1)
        pod = pool.wait("an agent Pod on the node",
                        lambda: next((p for p in pool.pods() if p["spec"].get("nodeName")), None), timeout=60)
        spec = pod["spec"]
        [c] = spec["containers"]
        assert c["image"] == settings["agents"]["image"]
        assert c["args"] == ["--once", "--settings-dir", "/etc/raibid/settings"]
        for kind in ("requests", "limits"):
            assert c["resources"][kind]["cpu"] == settings["agents"]["cpu"]
            assert c["resources"][kind]["memory"] == settings["agents"]["memory"]
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["settings"]["mountPath"] == "/etc/raibid/settings" and "subPath" not in mounts["settings"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["settings"]["configMap"]["name"] == "raibid-settings"
        assert spec["nodeName"] == "dgx-spark-1" and spec["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
        assert spec["serviceAccountName"] == "raibid-agent"
        job = pool.jobs()[0]
        assert job["spec"]["activeDeadlineSeconds"] == settings["agents"]["jobTimeoutSeconds"]
        assert pod["status"]["phase"] == "Running"


class TestKedaVerdict:
    """`sync` succeeds only when KEDA accepts the ScaledJob, and says why when it does not."""

    def test_unreachable_redis_fails_sync_with_kedas_message(self, pool: Pool) -> None:
        # A hand edit that verifies (the name is in the namespace) but names a Service that
        # does not exist: KEDA cannot reach Redis, so the pool could never scale.
        bad = f"raibid-redis-typo.{pool.namespace}.svc.cluster.local:6379"
        pool.raibid("gitops", "set", f"queue.redisAddress={bad}")
        proc = pool.sync("--timeout", "90s", check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"ScaledJob {pool.namespace}/raibid-agent" in proc.stderr
        assert "ScaledJobCheckFailed" in proc.stderr  # KEDA's reason, from its Ready condition
        # Fixed by the next commit: sync is green again, and KEDA accepts the ScaledJob.
        pool.raibid("gitops", "set", f"queue.redisAddress=raibid-redis.{pool.namespace}.svc.cluster.local:6379")
        pool.sync()
        ready = {c["type"]: c for c in pool.scaled_job()["status"]["conditions"]}["Ready"]
        assert ready["status"] == "True", ready


def _pr_number(p: Pool) -> int:
    pulls = p.gitea.api("GET", f"/repos/{p.owner}/{p.name}/pulls?state=open")
    assert isinstance(pulls, list) and len(pulls) == 1, pulls
    return int(pulls[0]["number"])
