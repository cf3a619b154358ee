"""Fixture ``pool``: a generated config repository on Gitea, bootstrapped as a user would —
the Flux objects of clusters/dgx-spark applied once, Secrets created — and synced, with KEDA and
the stack's Redis behind it (see fixtures_stack.py). Used by the whole-loop tests
(test_pool_stack.py) and the operator's-day tests (test_operator_stack.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures_redis import wait_until

from raibid_gitops.devstack.cluster import mark_ready
from raibid_gitops.devstack.processes import FluxControllers, GiteaServer, KubeStack, StackError, free_port

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
        return wait_until(check, timeout, 0.25, what, detail=self.diagnostics)

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
    yield from make_pool(kube, flux, gitea, keda, redis_service, tmp_path)


def make_pool(kube: KubeStack, flux: FluxControllers, gitea: GiteaServer, keda: Any, redis_service: Any,
              tmp_path: Path, init_args: tuple[str, ...] = ()) -> Iterator[Pool]:
    """The `pool` fixture's body, for a module with a stack of its own (e.g. more nodes);
    ``init_args`` go to `raibid gitops init` too (e.g. ``("--nodes", "3")``)."""
    namespace = f"p-{uuid.uuid4().hex[:8]}"
    name = f"cfg-{uuid.uuid4().hex[:8]}"
    clone_url = str(gitea.api("POST", f"/orgs/{gitea.org}/repos",
                              {"name": name, "private": True, "auto_init": False,
                               "default_branch": "main"})["clone_url"])
    svc = redis_service(namespace)
    env = {**os.environ, "RAIBID_GITEA_TOKEN": gitea.token, "RAIBID_GITEA_USER": gitea.admin_user,
           "KUBECONFIG": str(kube.kubeconfig), "RAIBID_REDIS_URL": svc.server.url,
           "RAIBID_REDIS_PASSWORD": svc.server.password, "GIT_TERMINAL_PROMPT": "0"}
    repo = tmp_path / "config"
    _raibid("gitops", "init", str(repo), "--remote", clone_url,
            "--set", f"cluster.namespace={namespace}", "--set", f"queue.redisAddress={svc.address}",
            "--set", f"gitea.url={gitea.url}", "--set", f"gitea.owner={gitea.org}", "--set", f"gitea.repo={name}",
            "--set", f"scaling.pollingInterval={POLL}", *init_args, cwd=tmp_path, env=env)
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
    """raibid/app: what the CI jobs build (a Makefile whose `test` succeeds after two seconds:
    long enough for start_agent's prober to see the agent ready while it runs the job)."""
    try:
        gitea.api("POST", f"/orgs/{gitea.org}/repos", {"name": "app", "private": True, "default_branch": "main"})
    except StackError:
        return  # made by an earlier test of this session
    work = tmp / "app"
    work.mkdir()
    (work / "Makefile").write_text("test:\n\t@sleep 2\n\t@echo ok\n")
    env = gitea.git_env()
    for args in (["init", "-q", "-b", "main"], ["add", "."],
                 ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "app"],
                 ["push", "-q", f"{gitea.url}/{gitea.org}/app.git", "main"]):
        subprocess.run(["git", *args], cwd=work, env=env, check=True, capture_output=True)


def _teardown(p: Pool) -> None:
    """Delete the Flux objects (prune removes the namespace and everything in it, which the
    namespace controller finishes) and the repository. raibid-cluster first: it manages the
    other two and would otherwise re-create them."""
    try:
        p.kube.kubectl("delete", "kustomization", "raibid-cluster", "-n", "flux-system",
                       "--ignore-not-found", "--timeout=120s")
        p.kube.kubectl("delete", "kustomization,gitrepository", "raibid-config", "-n", "flux-system",
                       "--ignore-not-found", "--timeout=120s")
        p.kube.kubectl("delete", "namespace", p.namespace, "--ignore-not-found", "--timeout=120s")
        p.kube.kubectl("delete", "secret", "raibid-config-auth", "-n", "flux-system", "--ignore-not-found")
    finally:
        p.gitea.api("DELETE", f"/repos/{p.owner}/{p.name}", expect=(204, 404))


def start_agent(p: Pool, log: Path, pod: dict[str, Any] | None = None) -> subprocess.Popen[bytes]:
    """The real agent as the ScaledJob Pod ``pod`` (default: the first agent Pod not yet Ready)
    would run it (--once, its Pod name as agent id), settings from the ConfigMap Flux applied,
    Redis and Gitea of the stack.

    KWOK leaves agent Pods not Ready (their readiness is the agent's), so this also plays the
    kubelet's prober: it asks the Pod's readinessProbe (httpGet on the metrics port, served here
    on a loopback port) and marks the Pod Ready once it passes. It asks every quarter second
    rather than every ``periodSeconds``: a one-job agent may be done within one period, and
    the Pod's Ready is what the test looks at."""
    if pod is None:
        pod = p.wait("an agent Pod not yet Ready",
                     lambda: next((x for x in p.pods() if not _pod_ready(x) and x["status"].get("podIP")), None),
                     timeout=60)
    [container] = pod["spec"]["containers"]
    probe = container["readinessProbe"]
    port = free_port()
    token = p.tmp / "gitea-token"
    token.write_text(p.gitea.token)
    pw = p.tmp / "redis-password"
    pw.write_text(p.redis.password)
    out = open(log, "ab")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raibid_agent.main", "--once", "--settings-configmap", "-n", p.namespace,
             "--kubeconfig", str(p.kube.kubeconfig), "--redis-url", p.redis.url, "--redis-password-file", str(pw),
             "--gitea-token-file", str(token), "--agent-id", pod["metadata"]["name"],
             "--workdir", str(p.tmp), "--metrics-port", str(port), "--metrics-addr", "127.0.0.1"],
            env=p.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        out.close()
    url = f"http://127.0.0.1:{port}{probe['httpGet']['path']}"
    threading.Thread(target=_prober, args=(p, proc, pod["metadata"]["name"], url, log), daemon=True).start()
    return proc


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in pod["status"].get("conditions") or [])


def _prober(p: Pool, proc: subprocess.Popen[bytes], pod: str, url: str, log: Path, period: float = 0.25) -> None:
    """Probe until the agent is ready, then mark its Pod Ready; what went wrong goes to its log
    (a test reading the Pod's Ready then has the reason next to the agent's own output)."""
    last = "never answered"
    while proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    try:
                        mark_ready(p.kube, p.namespace, pod)
                    except StackError as exc:
                        last = f"marking {pod} Ready failed: {exc}"
                        break
                    return
        except OSError as exc:
            last = f"{url}: {exc}"  # not listening yet, or 503: not ready
        time.sleep(period)
    with open(log, "a") as f:
        f.write(f"[prober] {pod} not marked Ready: {last}\n")
