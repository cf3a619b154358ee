"""Fixtures: the real local stack (see conftest.py and raibid_gitops/devstack/processes.py).

Session scope, one of each, on free 127.0.0.1 ports, in pytest's tmp dirs:

- ``kube``   etcd + kube-apiserver + kube-controller-manager + kube-scheduler, and KWOK with one
             DGX Spark node (arm64, 20 CPU, 128 GiB, 1 GPU); Flux, KEDA and KWOK CRDs applied,
             a default StorageClass, namespace flux-system
- ``flux``   notification-, source- and kustomize-controller against ``kube``
- ``keda``   the KEDA operator against ``kube``, with the stack's cluster DNS (a hosts file)
- ``cluster_redis``  redis-server on port 6379 of a loopback address of its own: the Redis
             that a generated repository's ``raibid-redis`` Service stands for
- ``gitea``  Gitea with admin user, token and organisation ``raibid``

Function scope: ``kube_namespace`` (a unique namespace), ``gitea_repo`` (a fresh, empty
repository in the organisation) and ``redis_service`` (makes ``raibid-redis.<ns>`` reachable
for KEDA: Secret, DNS name).

A test that uses any of them is marked ``stack`` automatically, so ``pytest -m 'not stack'``
runs only the fast tests. A missing binary is a failure, not a skip: a suite that silently
skips its integration tests proves nothing.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from raibid_gitops.devstack import processes
from raibid_gitops.devstack.keda import KedaOperator, start_keda
from raibid_gitops.devstack.processes import (
    FluxControllers,
    GiteaServer,
    KubeStack,
    StackError,
    StackNotBuilt,
)
from raibid_gitops.devstack.redis_server import RedisServer, free_loopback_address, start_redis

#: The port of the generated raibid-redis Service (base/redis.yaml), kept by the stack's Redis.
REDIS_PORT = 6379

#: Fixtures that need the stack; a test using one is marked `stack`.
STACK_FIXTURES = frozenset({"kube", "flux", "gitea", "kube_namespace", "gitea_repo", "kube_client", "keda",
                            "cluster_redis", "redis_service"})


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
def keda(kube: KubeStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KedaOperator]:
    operator = _start("the KEDA operator", lambda: start_keda(kube, tmp_path_factory.mktemp("keda")))
    yield operator
    operator.stop()


@pytest.fixture(scope="session")
def cluster_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The Redis behind every generated repository's raibid-redis Service, on the Service's
    port (6379) at a loopback address of its own."""
    server = _start("Redis", lambda: start_redis(tmp_path_factory.mktemp("cluster-redis"), port=REDIS_PORT,
                                                  host=free_loopback_address(REDIS_PORT)))
    yield server
    server.stop()


@dataclass(frozen=True)
class RedisService:
    """What ``redis_service(ns)`` set up: the names and the server behind them."""

    namespace: str
    address: str  # as queue.redisAddress spells it: raibid-redis.<ns>.svc.cluster.local:6379
    server: RedisServer


@pytest.fixture
def redis_service(kube: KubeStack, keda: KedaOperator, cluster_redis: RedisServer
                  ) -> Iterator[Callable[[str], RedisService]]:
    """``redis_service(namespace)`` makes the generated raibid-redis Service of ``namespace``
    reachable for KEDA as in a cluster: its DNS name resolves to ``cluster_redis`` and the
    Secret raibid-redis holds that server's password (as bootstrap creates it). The namespace
    is created if missing; Redis is flushed, so each test starts with an empty queue."""
    from raibid_gitops import contract
    from raibid_gitops.clients.redis import connect

    names: list[str] = []

    def make(namespace: str) -> RedisService:
        host = f"raibid-redis.{namespace}.svc.cluster.local"
        keda.hosts.add(host, cluster_redis.host)
        names.append(host)
        # apply: either may exist already (a namespace Flux made, a second call).
        kube.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}))
        kube.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": contract.REDIS_SECRET, "namespace": namespace},
            "stringData": {contract.REDIS_SECRET_KEY: cluster_redis.password}}))
        client = connect(cluster_redis.url, password=cluster_redis.password)
        client.flushall()
        client.close()
        return RedisService(namespace, f"{host}:{REDIS_PORT}", cluster_redis)

    yield make
    for host in names:
        keda.hosts.remove(host)


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
    """A namespace of the test's own, deleted after (the namespace controller finishes it)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--ignore-not-found", "--timeout=120s")


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
