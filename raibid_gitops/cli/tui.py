"""`raibid tui`: the operator's screen (Flux, pending changes, the queue, the agents).

Only the parser is built at import time; textual and the clients are imported by the handler,
so `raibid --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tui", help="the operator's screen: Flux, pending changes, the queue and the agents",
        description="Flux reconciliation state (live), settings and pull requests, the queue and the "
                    "agents. Gitea is read from RAIBID_GITEA_URL and RAIBID_GITEA_TOKEN.",
    )
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None,
                   help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="namespace of the Flux objects (default: flux-system)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="Flux objects in every namespace")
    p.add_argument("--repo", type=Path, default=None,
                   help="config repository directory (default: the one containing the current directory)")
    p.add_argument("--redis-url", default=None,
                   help="Redis of the job queue (default: $RAIBID_REDIS_URL or redis://127.0.0.1:6379/0)")
    p.set_defaults(handler=run)


def _repo(arg: Path | None) -> Path | None:
    from raibid_gitops.errors import ConfigRepoError
    from raibid_gitops.gitops.layout import find_repo_root

    if arg is not None:
        return arg.resolve()
    try:
        return find_repo_root()
    except ConfigRepoError:
        return None  # the Changes tab says so; the other tabs work without a repo


def run(args: argparse.Namespace) -> int:
    from raibid_gitops.errors import RaibidError
    from raibid_tui.app import RaibidApp
    from raibid_tui.sources import build

    sources = build(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace,
                    all_namespaces=args.all_namespaces, repo=_repo(args.repo), redis_url=args.redis_url,
                    gitea_url=os.environ.get("RAIBID_GITEA_URL") or None,
                    gitea_token=os.environ.get("RAIBID_GITEA_TOKEN") or None)
    app = RaibidApp(sources)
    try:
        code = app.run()
    finally:
        sources.stop()
    if app.unexpected is not None:
        err = app.unexpected
        if isinstance(err, RaibidError):
            raise err
        raise RaibidError(f"the TUI stopped on an unexpected error: {type(err).__name__}: {err}")
    return int(code or 0)
