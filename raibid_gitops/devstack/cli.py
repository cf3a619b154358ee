"""``raibid-devstack``: build the local stack, or run it by hand for development.

    raibid-devstack build            build the pinned binaries into the cache (idempotent)
    raibid-devstack build --check    exit 0 when the cache is complete
    raibid-devstack up [--dir D]     start the cluster (etcd, kube-apiserver, controller-manager,
                                     scheduler, a KWOK DGX Spark node), the Flux controllers, KEDA,
                                     Gitea and Redis on loopback; print exports; Ctrl-C stops
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from raibid_gitops.devstack import build, processes
from raibid_gitops.devstack.keda import start_keda
from raibid_gitops.devstack.redis_server import free_loopback_address, start_redis
from raibid_gitops.errors import RaibidError

#: The Redis Service of a repository generated with default settings, and its port.
DEFAULT_REDIS_HOST = "raibid-redis.raibid-ci.svc.cluster.local"
REDIS_PORT = 6379


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def up(workdir: Path) -> int:
    """Start everything, print the endpoints, wait for Ctrl-C (or SIGTERM), stop everything."""
    running: list[Any] = []  # anything with stop(), in start order
    # SIGTERM (e.g. from tmux kill-session) takes the same path as Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        t0 = time.monotonic()
        _err(f"[devstack] work dir {workdir}")
        _err("[devstack] starting etcd, kube-apiserver, controller-manager, scheduler, KWOK node ...")
        kube = processes.start_kube(workdir / "kube")
        running.append(kube)
        _err("[devstack] starting Flux notification-, source- and kustomize-controller ...")
        flux = processes.start_flux(kube, workdir / "flux")
        running.append(flux)
        _err("[devstack] starting the KEDA operator ...")
        keda = start_keda(kube, workdir / "keda")
        running.append(keda)
        _err("[devstack] starting Gitea ...")
        gitea = processes.start_gitea(workdir / "gitea")
        running.append(gitea)
        _err("[devstack] starting Redis ...")
        # On the Service's port at a loopback address of its own, named as the default
        # settings name it: a generated repository's ScaledJob reaches it as it would in k3s.
        redis = start_redis(workdir / "redis", port=REDIS_PORT, host=free_loopback_address(REDIS_PORT))
        running.append(redis)
        keda.hosts.add(DEFAULT_REDIS_HOST, redis.host)
        _err(f"[devstack] ready in {time.monotonic() - t0:.1f}s; logs under {workdir}/*/logs\n")

        print(f"kube-apiserver  {kube.server}   (kubeconfig {kube.kubeconfig})")
        print(f"flux storage    {flux.storage_url}   receivers {flux.receiver_url}")
        print(f"keda-operator   metrics {keda.metrics_url}   cluster DNS {keda.hosts.path}")
        print(f"gitea           {gitea.url}   "
              f"(user {gitea.admin_user}, password {gitea.admin_password}, org {gitea.org})")
        print(f"redis           {redis.url}   (password {redis.password}; "
              f"{DEFAULT_REDIS_HOST}:{REDIS_PORT} for KEDA: create Secret raibid-redis in raibid-ci)")
        print()
        print(f"export KUBECONFIG={shlex.quote(str(kube.kubeconfig))}")
        print(f"export RAIBID_GITEA_URL={shlex.quote(gitea.url)}")
        print(f"export RAIBID_GITEA_TOKEN={shlex.quote(gitea.token)}")
        print(f"export RAIBID_REDIS_URL={shlex.quote(redis.url)}")
        print(f"export RAIBID_REDIS_PASSWORD={shlex.quote(redis.password)}")
        sys.stdout.flush()
        _err("\n[devstack] running; Ctrl-C stops everything")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        _err("\n[devstack] stopping ...")
        return 0
    except RaibidError as exc:
        _err(f"[devstack] error: {exc}")
        return 1
    finally:
        for thing in reversed(running):
            thing.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raibid-devstack", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the stack's binaries into the cache (idempotent)")
    b.add_argument("--check", action="store_true", help="only check; exit 1 when incomplete")
    b.add_argument("components", nargs="*", help="only these components")
    u = sub.add_parser("up", help="start the whole stack on loopback until Ctrl-C")
    u.add_argument("--dir", type=Path, help="work dir (default: a new temporary dir)")
    args = parser.parse_args(argv)

    if args.command == "build":
        return build.main(["--check"] if args.check else args.components)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="raibid-devstack."))
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        # Each start makes fresh state (etcd data, Gitea users and tokens); reusing a dir
        # would collide with the last run's.
        _err(f"[devstack] error: {workdir} is not empty; give a new or empty --dir")
        return 2
    return up(workdir.resolve())


if __name__ == "__main__":
    sys.exit(main())
