"""The local stack a pool benchmark runs on: kube-apiserver (with its controllers and a KWOK
node), Flux, KEDA, Gitea and a Redis that KEDA reaches at the in-cluster name of the agents'
Redis. Shared by keda_reaction.py and push_to_apply.py. Not a benchmark itself."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The Redis port the rendered ScaledJob names (raibid-redis.<ns>.svc.cluster.local:6379).
REDIS_PORT = 6379


@dataclass(frozen=True)
class PoolStack:
    kube: Any
    flux: Any
    gitea: Any
    redis: Any
    namespace: str


@contextmanager
def pool_stack(work: Path, namespace: str = "raibid-ci") -> Iterator[PoolStack]:
    """Start the stack under ``work``, with ``namespace`` and its Secret ``raibid-redis`` (the
    Redis password) created; stop everything on exit, last started first."""
    from raibid_gitops.devstack import processes
    from raibid_gitops.devstack.keda import start_keda
    from raibid_gitops.devstack.redis_server import free_loopback_address, start_redis

    print("starting the local stack ...", file=sys.stderr)
    kube = processes.start_kube(work / "kube")
    stops: list[Callable[[], None]] = [kube.stop]
    try:
        flux = processes.start_flux(kube, work / "flux")
        stops.append(flux.stop)
        keda = start_keda(kube, work / "keda")
        stops.append(keda.stop)
        gitea = processes.start_gitea(work / "gitea")
        stops.append(gitea.stop)
        redis = start_redis(work / "redis", port=REDIS_PORT, host=free_loopback_address(REDIS_PORT))
        stops.append(redis.stop)
        keda.hosts.add(f"raibid-redis.{namespace}.svc.cluster.local", redis.host)
        kube.kubectl("create", "namespace", namespace)
        kube.kubectl("-n", namespace, "create", "secret", "generic", "raibid-redis",
                     f"--from-literal=password={redis.password}")
        yield PoolStack(kube, flux, gitea, redis, namespace)
    finally:
        for stop in reversed(stops):
            stop()
