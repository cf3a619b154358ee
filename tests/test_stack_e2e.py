"""End to end on the real local stack: `raibid gitops init` -> push to Gitea -> Flux
(source-controller fetches, kustomize-controller applies) -> objects in kube-apiserver.

No fakes: the Gitea, kube-apiserver, etcd and Flux controllers here are the programs a user
runs, built by `raibid-devstack build`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from raibid_gitops.devstack.processes import (
    FluxControllers,
    GiteaServer,
    KubeStack,
    describe_logs,
)

pytestmark = pytest.mark.stack

#: Flux's first reconcile after the objects are created normally lands within ~10 s here;
#: the margin is for a 2-core machine shared with builds.
RECONCILE_TIMEOUT = 240


class TestStackStarts:
    """The stack fixtures start and each server answers."""

    def test_kube_readyz(self, kube: KubeStack) -> None:
        assert kube.readyz() == 200
        crds = kube.kubectl("get", "crd", "-o", "name")
        assert "customresourcedefinition.apiextensions.k8s.io/kustomizations.kustomize.toolkit.fluxcd.io" in crds
        assert "customresourcedefinition.apiextensions.k8s.io/scaledjobs.keda.sh" in crds
        assert kube.kubectl("get", "namespace", "flux-system", "-o", "name").strip() == "namespace/flux-system"

    def test_gitea_version(self, gitea: GiteaServer) -> None:
        version = gitea.api("GET", "/version")
        assert isinstance(version, dict) and version.get("version")
        org = gitea.api("GET", f"/orgs/{gitea.org}")
        assert isinstance(org, dict) and org["username"] == gitea.org

    def test_flux_controllers_running(self, flux: FluxControllers) -> None:
        assert all(p.exited() is None for p in flux.processes), describe_logs(flux.processes)


def _raibid(*args: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "raibid_gitops.cli", *args], cwd=cwd,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"raibid {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def _pushed_branch_head(gitea: GiteaServer, owner: str, name: str, branch: str) -> str:
    """The branch's head as Gitea's API reports it.

    Gitea marks a repository non-empty asynchronously after its first push; until then the
    branch API answers 500 (a nil-pointer panic in Gitea 1.26.0), so wait for ``empty`` to clear.
    """
    deadline = time.monotonic() + 30
    while True:
        repo = gitea.api("GET", f"/repos/{owner}/{name}")
        if isinstance(repo, dict) and not repo.get("empty", True):
            break
        assert time.monotonic() < deadline, f"Gitea still reports {owner}/{name} empty after a push"
        time.sleep(0.2)
    data = gitea.api("GET", f"/repos/{owner}/{name}/branches/{branch}")
    assert isinstance(data, dict)
    return str(data["commit"]["id"])


def _get_json(kube: KubeStack, *args: str) -> dict:
    return json.loads(kube.kubectl("get", *args, "-o", "json"))


def _condition(obj: dict, kind: str = "Ready") -> dict:
    for c in obj.get("status", {}).get("conditions", []):
        if c.get("type") == kind:
            return c
    return {}


def _flux_state(kube: KubeStack) -> str:
    """GitRepository and Kustomization status, for a failure message."""
    lines = []
    for kind in ("gitrepository", "kustomization"):
        try:
            obj = _get_json(kube, kind, "raibid-config", "-n", "flux-system")
        except Exception as exc:  # noqa: BLE001 - diagnostic only
            lines.append(f"{kind}: {exc}")
            continue
        lines.append(f"{kind}: status={json.dumps(obj.get('status', {}), indent=1)[:2000]}")
    return "\n".join(lines)


def test_init_push_flux_applies_overlay(
    kube: KubeStack, flux: FluxControllers, gitea: GiteaServer, gitea_repo, kube_client, redis_service,
    tmp_path: Path,
) -> None:
    """`raibid gitops init` -> git push -> Flux applies overlays/dgx-spark at the pushed commit,
    with the default settings (flux.wait: true: Redis Available, KEDA's ScaledJob Ready)."""
    repo = tmp_path / "config"
    redis_service("raibid-ci")
    _raibid("gitops", "init", str(repo),
            "--set", f"gitea.url={gitea.url}", "--set", f"gitea.owner={gitea_repo.owner}",
            "--set", f"gitea.repo={gitea_repo.name}",
            "--remote", gitea_repo.clone_url, cwd=tmp_path)
    gitea_repo.git("push", "origin", "main", cwd=repo)
    sha = gitea_repo.git("rev-parse", "HEAD", cwd=repo).strip()
    assert _pushed_branch_head(gitea, gitea_repo.owner, gitea_repo.name, "main") == sha

    # The GitRepository's credentials: created here, never committed.
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(kube_client)
    core.create_namespaced_secret("flux-system", k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(name="raibid-config-auth"),
        string_data={"username": gitea.admin_user, "password": gitea.token},
    ))
    try:
        kube.kubectl("apply", "-k", str(repo / "clusters" / "dgx-spark"))
        want = f"main@sha1:{sha}"
        deadline = time.monotonic() + RECONCILE_TIMEOUT
        while True:
            ks = _get_json(kube, "kustomization", "raibid-config", "-n", "flux-system")
            ready = _condition(ks)
            if ready.get("status") == "True" and ks["status"].get("lastAppliedRevision") == want:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"Kustomization raibid-config not Ready at {want} after {RECONCILE_TIMEOUT}s\n"
                            f"{_flux_state(kube)}\n{describe_logs(flux.processes)}")
            time.sleep(1)
        assert ks["status"]["observedGeneration"] == ks["metadata"]["generation"]
        assert ks["spec"]["wait"] is True

        settings_text = (repo / "overlays" / "dgx-spark" / "settings.yaml").read_text()
        settings = YAML(typ="safe").load(settings_text)
        cm = core.read_namespaced_config_map("raibid-settings", "raibid-ci")
        assert cm.data["settings.yaml"] == settings_text

        sj = k8s.CustomObjectsApi(kube_client).get_namespaced_custom_object(
            "keda.sh", "v1alpha1", "raibid-ci", "scaledjobs", "raibid-agent")
        assert sj["spec"]["maxReplicaCount"] == settings["agents"]["maxReplicas"]
    finally:
        _remove_flux_objects(kube)


def _remove_flux_objects(kube: KubeStack) -> None:
    """Leave flux-system as found, for later tests on the same session stack. Deleting the
    Kustomization prunes what it applied, namespace raibid-ci included; the namespace
    controller finishes that deletion."""
    kube.kubectl("delete", "kustomization", "raibid-cluster", "-n", "flux-system", "--ignore-not-found",
                 "--timeout=120s")
    kube.kubectl("delete", "kustomization,gitrepository", "raibid-config", "-n", "flux-system",
                 "--ignore-not-found", "--timeout=120s")
    kube.kubectl("delete", "namespace", "raibid-ci", "--ignore-not-found", "--timeout=120s")
    kube.kubectl("delete", "secret", "raibid-config-auth", "-n", "flux-system", "--ignore-not-found")
