"""`raibid bootstrap` and push-to-apply on the local stack: Gitea, kube-apiserver with
controller-manager/scheduler/KWOK, the Flux source-, kustomize- and notification-controllers,
KEDA and Redis — all real.

- the wiring phases run end to end, then again: the second run reports nothing to do and changes
  no object (resourceVersions) and no Gitea setting;
- a plain `git push` (no raibid command) is applied through the Receiver, with the GitRepository's
  interval set far beyond the test's patience, so only the webhook can explain it;
- Flux reports its verdict on that commit as a Gitea commit status; a broken manifest pushed gets
  a failure status with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from raibid_gitops.devstack.processes import FluxControllers, GiteaServer, KubeStack, StackError

pytestmark = pytest.mark.stack

#: Objects bootstrap creates or applies in flux-system (besides what Flux applies itself).
FLUX_SECRETS = ("raibid-config-auth", "raibid-gitea-status", "raibid-webhook-token")


@dataclass
class Booted:
    kube: KubeStack
    gitea: GiteaServer
    flux: FluxControllers
    owner: str
    namespace: str
    dir: Path
    env: dict[str, str]
    args: list[str]

    def bootstrap(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "raibid_gitops.cli", "bootstrap", *self.args, *extra],
                              env=self.env, capture_output=True, text=True, timeout=600)

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kube.kubectl("get", *args, "-o", "json"))

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Plain git, as an operator runs it: the token comes from RAIBID_GITEA_TOKEN through the
        # credential helper `raibid gitops init` configured.
        env = {**self.env, "GIT_TERMINAL_PROMPT": "0"}
        proc = subprocess.run(["git", *args], cwd=self.dir, env=env, capture_output=True, text=True)
        if check:
            assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return proc

    def resource_versions(self) -> dict[str, str]:
        out = {}
        for kind, ns in (("secrets", "flux-system"), ("secrets", self.namespace),
                         ("kustomizations,gitrepositories,receivers,providers,alerts", "flux-system")):
            for item in self.get(kind, "-n", ns)["items"]:
                out[f"{item['kind']}/{ns}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
        return out

    def gitea_state(self) -> Any:
        repo = f"/repos/{self.owner}/raibid-config"
        teams = self.gitea.api("GET", f"/orgs/{self.owner}/teams")
        return {
            "hooks": [(h["id"], h["config"]["url"], h["updated_at"]) for h in self.gitea.api("GET", f"{repo}/hooks")],  # type: ignore[union-attr]
            "collaborators": sorted(c["login"] for c in self.gitea.api("GET", f"{repo}/collaborators")),  # type: ignore[union-attr]
            "teams": [(t["id"], t["name"], t["permission"]) for t in teams],  # type: ignore[union-attr]
            "members": [sorted(m["login"] for m in self.gitea.api("GET", f"/teams/{t['id']}/members"))  # type: ignore[index]
                        for t in teams],  # type: ignore[union-attr]
            "bot": self.gitea.api("GET", "/users/raibid-bot")["id"],  # type: ignore[index]
        }

    def wait_applied(self, sha: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            ks = self.get("kustomization", "raibid-config", "-n", "flux-system")
            if (ks.get("status") or {}).get("lastAttemptedRevision") == f"main@sha1:{sha}" and any(
                    c["type"] == "Ready" and c["status"] in ("True", "False") and
                    c.get("observedGeneration") == ks["metadata"]["generation"]
                    for c in ks["status"].get("conditions", [])):
                return ks
            if time.monotonic() > deadline:
                pytest.fail(f"Flux did not attempt {sha[:12]} within {timeout:.0f}s: "
                            f"{json.dumps(ks.get('status'))[:1500]}")
            time.sleep(0.5)

    def statuses(self, sha: str) -> list[dict[str, Any]]:
        data = self.gitea.api("GET", f"/repos/{self.owner}/raibid-config/commits/{sha}/status")
        return list((data or {}).get("statuses") or [])  # type: ignore[union-attr]

    def wait_status(self, sha: str, state: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for st in self.statuses(sha):
                if "kustomization/raibid-config" in st.get("context", "") and st.get("status") == state:
                    return st
            if time.monotonic() > deadline:
                alerts = self.kube.kubectl("get", "alerts,providers", "-A", "-o", "yaml")
                log = self.flux.processes[0].log_tail(30)
                pytest.fail(f"no {state} status from Flux on {sha[:12]}: {self.statuses(sha)}\n{alerts[:3000]}\n{log}")
            time.sleep(0.5)


@pytest.fixture
def booted(kube: KubeStack, flux: FluxControllers, gitea: GiteaServer, keda: Any, redis_service: Any,
           tmp_path: Path) -> Iterator[Booted]:
    suffix = uuid.uuid4().hex[:6]
    owner, namespace = f"boot-{suffix}", f"b-{suffix}"
    svc = redis_service(namespace)  # Redis's password Secret exists already: bootstrap keeps it
    env = {**os.environ, "RAIBID_GITEA_TOKEN": gitea.token, "RAIBID_GITEA_USER": gitea.admin_user,
           "KUBECONFIG": str(kube.kubeconfig)}
    env = {k: v for k, v in env.items() if not k.startswith("GIT_CONFIG")}
    args = ["--gitea-url", gitea.url, "--owner", owner, "--dir", str(tmp_path / "config"),
            "--receiver-url", flux.receiver_url, "--timeout", "240s",
            "--set", f"cluster.namespace={namespace}", "--set", f"queue.redisAddress={svc.address}",
            # Polling so slow that only the webhook can explain a push applied within the test.
            "--set", "flux.interval=30m"]
    b = Booted(kube, gitea, flux, owner, namespace, tmp_path / "config", env, args)
    try:
        yield b
    finally:
        for cmd in (("delete", "kustomization", "raibid-cluster", "-n", "flux-system", "--ignore-not-found",
                     "--timeout=120s"),
                    ("delete", "kustomization,gitrepository,receiver,alert", "raibid-config", "-n", "flux-system",
                     "--ignore-not-found", "--timeout=120s"),
                    ("delete", "provider", "raibid-gitea", "-n", "flux-system", "--ignore-not-found"),
                    ("delete", "secret", *FLUX_SECRETS, "-n", "flux-system", "--ignore-not-found"),
                    ("delete", "namespace", namespace, "--ignore-not-found", "--timeout=120s")):
            try:
                kube.kubectl(*cmd)
            except StackError:
                pass
        gitea.api("DELETE", f"/repos/{owner}/raibid-config", expect=(204, 404))
        gitea.api("DELETE", f"/orgs/{owner}", expect=(204, 404))


class TestBootstrap:
    def test_wires_everything_and_a_second_run_changes_nothing(self, booted: Booted) -> None:
        first = booted.bootstrap()
        assert first.returncode == 0, first.stdout + first.stderr
        for phase in ("repo", "config", "secrets", "objects", "webhook", "sync"):
            assert any(line.split()[1:2] == [phase] for line in first.stdout.splitlines()), first.stdout
        assert booted.gitea.token not in first.stdout + first.stderr
        ks = booted.get("kustomization", "raibid-config", "-n", "flux-system")
        head = booted.git("rev-parse", "HEAD").stdout.strip()
        assert ks["status"]["lastAppliedRevision"] == f"main@sha1:{head}"
        hooks = booted.gitea.api("GET", f"/repos/{booted.owner}/raibid-config/hooks")
        receiver = booted.get("receiver", "raibid-config", "-n", "flux-system")
        assert [h["config"]["url"] for h in hooks] == [booted.args[booted.args.index("--receiver-url") + 1]  # type: ignore[union-attr]
                                                      + receiver["status"]["webhookPath"]]
        before = (booted.resource_versions(), booted.gitea_state())

        second = booted.bootstrap()
        assert second.returncode == 0, second.stdout + second.stderr
        lines = second.stdout.splitlines()
        assert len(lines) == 6 and all(line.endswith("nothing to do") for line in lines), second.stdout
        assert (booted.resource_versions(), booted.gitea_state()) == before

    def test_dry_run_changes_nothing(self, booted: Booted) -> None:
        plan = booted.bootstrap("--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert "would create organisation" in plan.stdout and "would write the config repository" in plan.stdout
        booted.gitea.api("GET", f"/orgs/{booted.owner}", expect=(404,))  # raises unless 404: not created
        assert not booted.dir.exists()
        assert booted.get("secrets", "-n", "flux-system", "--field-selector", "metadata.name=raibid-webhook-token")[
            "items"] == []

    def test_only_and_from_select_phases(self, booted: Booted) -> None:
        assert booted.bootstrap("--only", "repo").returncode == 0
        out = booted.bootstrap("--only", "repo").stdout
        assert out.strip().endswith("repo     nothing to do") and len(out.splitlines()) == 1
        bad = booted.bootstrap("--only", "everything")
        assert bad.returncode == 2 and "unknown phase" in bad.stderr


class TestPushToApply:
    def test_plain_push_is_applied_and_flux_reports_on_the_commit(self, booted: Booted) -> None:
        assert booted.bootstrap().returncode == 0
        settings = booted.dir / "overlays" / "dgx-spark" / "settings.yaml"
        # A plain hand edit (a setting only the ConfigMap carries), plain git.
        settings.write_text(settings.read_text().replace("logMaxLen: 10000", "logMaxLen: 20000"))
        booted.git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qam", "more log lines")
        booted.git("push", "-q")
        sha = booted.git("rev-parse", "HEAD").stdout.strip()
        ks = booted.wait_applied(sha)
        assert ks["status"]["lastAppliedRevision"] == f"main@sha1:{sha}"
        repo = booted.get("gitrepository", "raibid-config", "-n", "flux-system")
        assert repo["spec"]["interval"] == "30m"  # polling could not have done it
        assert repo["status"].get("lastHandledReconcileAt")  # the Receiver's request
        st = booted.wait_status(sha, "success")
        assert "succeeded" in st["description"]

    def test_a_broken_manifest_gets_a_failure_status(self, booted: Booted) -> None:
        assert booted.bootstrap().returncode == 0
        kz = booted.dir / "overlays" / "dgx-spark" / "kustomization.yaml"
        kz.write_text(kz.read_text().replace("  - ../../base\n", "  - ../../base\n  - missing.yaml\n"))
        booted.git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qam", "broken")
        booted.git("push", "-q")
        sha = booted.git("rev-parse", "HEAD").stdout.strip()
        booted.wait_applied(sha)
        st = booted.wait_status(sha, "failure")
        assert "build failed" in st["description"]
