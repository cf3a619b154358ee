"""Fixtures: the real local stack (see conftest.py and raibid_gitops/devstack/processes.py).

Session scope, one of each, on free 127.0.0.1 ports, in pytest's tmp dirs:

- ``kube``   etcd + kube-apiserver, Flux and KEDA CRDs applied, namespace flux-system
- ``flux``   source-controller + kustomize-controller against ``kube``
- ``gitea``  Gitea with admin user, token and organisation ``raibid``

Function scope: ``kube_namespace`` (a unique namespace) and ``gitea_repo`` (a fresh, empty
repository in the organisation).

A test that uses any of them is marked ``stack`` automatically, so ``pytest -m 'not stack'``
runs only the fast tests. A missing binary is a failure, not a skip: a suite that silently
skips its integration tests proves nothing.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from raibid_gitops.devstack import processes
from raibid_gitops.devstack.processes import (
    FluxControllers,
    GiteaServer,
    KubeStack,
    StackError,
    StackNotBuilt,
)

#: Fixtures that need the stack; a test using one is marked `stack`.
STACK_FIXTURES = frozenset({"kube", "flux", "gitea", "kube_namespace", "gitea_repo", "kube_client"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


T = TypeVar("T")


def _start(what: str, start: Callable[[], T]) -> T:
    """Run a starter; turn a missing build or a failed start into a clear test failure."""
    try:
        return start()
    except StackNotBuilt as exc:
        pytest.fail(f"stack not built: run `raibid-devstack build`\n({exc.message})", pytrace=False)
    except StackError as exc:
        # The message carries the tail of every started process's log.
        pytest.fail(f"could not start {what}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeStack]:
    stack = _start("etcd + kube-apiserver", lambda: processes.start_kube(tmp_path_factory.mktemp("kube")))
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def flux(kube: KubeStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FluxControllers]:
    controllers = _start("the Flux controllers",
                         lambda: processes.start_flux(kube, tmp_path_factory.mktemp("flux")))
    yield controllers
    controllers.stop()


@pytest.fixture(scope="session")
def gitea(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GiteaServer]:
    server = _start("Gitea", lambda: processes.start_gitea(tmp_path_factory.mktemp("gitea")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kube_client(kube: KubeStack):  # type: ignore[no-untyped-def]
    """A kubernetes.client.ApiClient for ``kube``."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(kube.kubeconfig))
    yield client
    client.close()


@pytest.fixture
def kube_namespace(kube: KubeStack) -> Iterator[str]:
    """A namespace of the test's own. Deleted after; with no kube-controller-manager (no
    namespace controller) it stays Terminating, which is harmless: the name is unique."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@dataclass(frozen=True)
class GiteaRepo:
    """An empty repository in Gitea; ``git()`` runs git authenticated as the admin."""

    gitea: GiteaServer
    owner: str
    name: str
    clone_url: str

    def git_env(self) -> dict[str, str]:
        """Environment for git commands that talk to this Gitea (token never in a URL/argv)."""
        return self.gitea.git_env()

    def git(self, *args: str, cwd: Path) -> str:
        proc = subprocess.run(["git", *args], cwd=cwd, env=self.git_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).replace(self.gitea.token, "***")
            raise AssertionError(f"git {' '.join(args)} failed with {proc.returncode}:\n{out}")
        return proc.stdout


@pytest.fixture
def gitea_repo(gitea: GiteaServer) -> Iterator[GiteaRepo]:
    """A fresh, empty repository in the organisation, with a unique name; deleted after."""
    name = f"cfg-{uuid.uuid4().hex[:10]}"
    url = processes.create_repo(gitea, name)
    yield GiteaRepo(gitea=gitea, owner=gitea.org, name=name, clone_url=url)
    processes.delete_repo(gitea, name)
