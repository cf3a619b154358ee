"""Past one machine, on the local stack: three KWOK DGX Spark nodes (and a small node with no
GPU), the real kube-scheduler placing the Pods of the agent Jobs the real KEDA creates, from a
config repository on Gitea applied by Flux.

This module starts a Kubernetes stack of its own (3 DGX Sparks, then ``arm-small``: 4 CPU,
16 GiB, no GPU) with its own Flux and KEDA; Gitea and the cluster's Redis are the session's.
KWOK runs no containers and has no pod-complete stage here, so an agent Pod stays Running and
the Jobs KEDA made stay: what the scheduler did can be read off the Pods.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_pool import POLL, Pool, make_pool
from fixtures_stack import REDIS_PORT, RedisService

from raibid_gitops.devstack import processes
from raibid_gitops.devstack.cluster import NodeShape, add_node
from raibid_gitops.devstack.keda import KedaOperator, start_keda
from raibid_gitops.devstack.processes import FluxControllers, KubeStack, StackError
from raibid_gitops.devstack.redis_server import RedisServer
from raibid_gitops.quantities import parse_quantity

pytestmark = pytest.mark.stack

DGX_NODES = ("dgx-spark-1", "dgx-spark-2", "dgx-spark-3")
SMALL_NODE = "arm-small"


def _start(what: str, start: Callable[[], Any]) -> Any:
    try:
        return start()
    except StackError as exc:
        pytest.fail(f"could not start {what}: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def kube3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeStack]:
    stack = _start("a kube stack with three nodes",
                   lambda: processes.start_kube(tmp_path_factory.mktemp("kube3"), nodes=3))
    try:
        # A node without room for a big agent and without a GPU: nothing may land there.
        add_node(stack, SMALL_NODE, NodeShape(cpu="4", memory="16Gi", gpus=0))
        # k3s with the NVIDIA container toolkit has this RuntimeClass; GPU agents name it.
        stack.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "nvidia"},
            "handler": "nvidia"}))
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def flux3(kube3: KubeStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FluxControllers]:
    controllers = _start("Flux", lambda: processes.start_flux(kube3, tmp_path_factory.mktemp("flux3")))
    yield controllers
    controllers.stop()


@pytest.fixture(scope="module")
def keda3(kube3: KubeStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KedaOperator]:
    operator = _start("KEDA", lambda: start_keda(kube3, tmp_path_factory.mktemp("keda3")))
    yield operator
    operator.stop()


@pytest.fixture
def pool3(kube3: KubeStack, flux3: FluxControllers, gitea: Any, keda3: KedaOperator, cluster_redis: RedisServer,
          tmp_path: Path) -> Iterator[Pool]:
    """A config repository made with `init --nodes 3`, bootstrapped and synced on this stack."""
    from raibid_gitops import contract
    from raibid_gitops.clients.redis import connect

    hosts: list[str] = []

    def redis_service(namespace: str) -> RedisService:
        host = f"raibid-redis.{namespace}.svc.cluster.local"
        keda3.hosts.add(host, cluster_redis.host)
        hosts.append(host)
        kube3.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}))
        kube3.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": contract.REDIS_SECRET, "namespace": namespace},
            "stringData": {contract.REDIS_SECRET_KEY: cluster_redis.password}}))
        client = connect(cluster_redis.url, password=cluster_redis.password)
        client.flushall()
        client.close()
        return RedisService(namespace, f"{host}:{REDIS_PORT}", cluster_redis)

    try:
        # Agents of 8 CPU: two fit a 20-CPU DGX Spark, none fits arm-small.
        yield from make_pool(kube3, flux3, gitea, keda3, redis_service, tmp_path,
                             ("--nodes", "3", "--set", "agents.cpu=8", "--set", "agents.memory=16Gi",
                              "--set", "agents.maxReplicas=2"))
    finally:
        for host in hosts:
            keda3.hosts.remove(host)


def placed(p: Pool) -> dict[str, list[dict[str, Any]]]:
    """Scheduled agent Pods by node."""
    out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for pod in p.pods():
        node = pod["spec"].get("nodeName")
        if node and not pod["metadata"].get("deletionTimestamp"):
            out[node].append(pod)
    return out


def requested(pods: list[dict[str, Any]], resource: str) -> float:
    return float(sum(parse_quantity(c["resources"]["requests"].get(resource, "0"))
                     for pod in pods for c in pod["spec"]["containers"]))


def allocatable(p: Pool, node: str, resource: str) -> float:
    return float(parse_quantity(p.get("node", node)["status"]["allocatable"].get(resource, "0")))


class TestAgentsAcrossNodes:
    """`set` a larger pool: KEDA's Jobs' Pods land on all three DGX Sparks, within each node's room."""

    def test_larger_pool_spreads_over_three_nodes_none_without_room(self, pool3: Pool) -> None:
        sj = pool3.scaled_job()
        spec = sj["spec"]["jobTargetRef"]["template"]["spec"]
        assert spec["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"

        # Seven 8-CPU agents do not fit three 20-CPU nodes (two each): refused, nothing changed.
        head = pool3.git("rev-parse", "HEAD")
        r = pool3.raibid("gitops", "set", "agents.maxReplicas=7", check=False)
        assert r.returncode == 2 and "do not fit the nodes: one node holds 2" in r.stderr, r.stderr
        assert pool3.git("rev-parse", "HEAD") == head

        pool3.raibid("gitops", "set", "agents.maxReplicas=6")
        pool3.sync()
        pool3.submit(10)
        by_node = pool3.wait("6 agent Pods scheduled",
                             lambda: (lambda b: b if sum(map(len, b.values())) >= 6 else None)(placed(pool3)),
                             timeout=120)
        assert pool3.job_count_over(3 * POLL) == {6}, pool3.diagnostics()
        by_node = placed(pool3)
        assert {n: len(v) for n, v in by_node.items()} == {n: 2 for n in DGX_NODES}, \
            {n: [x["metadata"]["name"] for x in v] for n, v in by_node.items()}
        for node, pods in by_node.items():
            assert requested(pods, "cpu") <= allocatable(pool3, node, "cpu")
            assert requested(pods, "memory") <= allocatable(pool3, node, "memory")
        assert SMALL_NODE not in by_node

    def test_gpu_agents_only_where_gpus_are(self, pool3: Pool) -> None:
        # One GPU per DGX Spark: three GPU agents, one on each, none on the node without a GPU
        # (it has room for their CPU and memory).
        pool3.raibid("gitops", "set", "agents.gpus=1", "agents.cpu=2", "agents.memory=4Gi", "agents.maxReplicas=3")
        pool3.sync()
        pool3.submit(6)
        pool3.wait("3 GPU agent Pods scheduled", lambda: sum(map(len, placed(pool3).values())) >= 3, timeout=120)
        assert pool3.job_count_over(3 * POLL) == {3}, pool3.diagnostics()
        by_node = placed(pool3)
        assert {n: len(v) for n, v in by_node.items()} == {n: 1 for n in DGX_NODES}
        for node, pods in by_node.items():
            assert requested(pods, "nvidia.com/gpu") <= allocatable(pool3, node, "nvidia.com/gpu")
            assert pods[0]["spec"]["runtimeClassName"] == "nvidia"
        # Pending GPU Pods would show up here: there are none, the pool is as large as the GPUs.
        assert all(p["spec"].get("nodeName") for p in pool3.pods())


class TestSentinelMode:
    """`set queue.mode=sentinel`: KEDA 2.21 accepts the redis-sentinel-streams trigger and
    scales from the lag it reads through the Sentinels (real ones: a primary, a replica and
    three Sentinels on loopback, the first at the address the Service's name maps to)."""

    def test_keda_scales_through_sentinel(self, pool3: Pool, keda3: KedaOperator, tmp_path: Path) -> None:
        from raibid_gitops.devstack.redis_ha import start_sentinel_set
        from raibid_gitops.devstack.redis_server import free_loopback_address

        ns = pool3.namespace
        name = f"raibid-redis-sentinel.{ns}.svc.cluster.local"
        ha = start_sentinel_set(tmp_path / "ha", replicas=1, service_host=free_loopback_address(26379),
                                down_after_ms=10_000)
        keda3.hosts.add(name, ha.sentinels[0].host)
        try:
            # The Secret bootstrap creates, holding this Redis's password (the Sentinels' too).
            pool3.kube.kubectl("apply", "-f", "-", input=json.dumps({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raibid-redis", "namespace": ns},
                "stringData": {"password": ha.password}}))
            pool3.env.update(RAIBID_REDIS_URL=ha.url, RAIBID_REDIS_PASSWORD=ha.password)
            pool3.raibid("gitops", "set", "queue.mode=sentinel", f"queue.sentinel.addresses={name}:26379",
                         "queue.sentinel.replicas=1")
            pool3.sync()  # waits until KEDA accepted the ScaledJob
            [trigger] = pool3.scaled_job()["spec"]["triggers"]
            assert trigger["type"] == "redis-sentinel-streams"
            assert trigger["metadata"]["address"] == f"{name}:26379"
            assert trigger["metadata"]["sentinelMaster"] == "raibid"
            for sts in ("raibid-redis-replica", "raibid-redis-sentinel"):
                assert pool3.get("statefulset", sts, "-n", ns)["status"].get("readyReplicas")
            pool3.submit(5)  # through the Sentinels (RAIBID_REDIS_URL is a redis+sentinel:// URL)
            pool3.wait("2 agent Jobs", lambda: len(pool3.jobs()) >= 2, timeout=120)
            assert pool3.job_count_over(3 * POLL) == {2}, pool3.diagnostics()
        finally:
            keda3.hosts.remove(name)
            ha.stop()
