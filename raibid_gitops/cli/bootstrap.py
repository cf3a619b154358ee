"""`raibid bootstrap`: the API-facing phases of bootstrapping (bootstrap.sh runs the installs
first, then this). See raibid_gitops/gitops/bootstrap.py for what each phase does."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PHASES = ("repo", "config", "secrets", "objects", "webhook", "sync")


def register(sub: argparse._SubParsersAction) -> None:
    from raibid_gitops.cli.gitops_sync import _kube_flags, duration

    p = sub.add_parser(
        "bootstrap", help="wire Gitea, the config repository, Secrets, Flux and the webhook (idempotent)",
        description="Phases, in order: " + ", ".join(PHASES) + ". Each looks before it acts: a second run "
                    "reports nothing to do and changes nothing. Needs RAIBID_GITEA_TOKEN (a Gitea admin token). "
                    "No secret value is printed. Exit 0 done, 1 a phase failed, 2 bad input.")
    p.add_argument("--gitea-url", required=True, metavar="URL", help="Gitea as this machine reaches it")
    p.add_argument("--gitea-cluster-url", metavar="URL",
                   help="Gitea as the cluster reaches it (settings gitea.url; default --gitea-url)")
    p.add_argument("--owner", default="raibid", help="Gitea organisation (default raibid)")
    p.add_argument("--repo", default="raibid-config", help="config repository name (default raibid-config)")
    p.add_argument("--dir", type=Path, default=Path("raibid-config"),
                   help="local clone of the config repository (default ./raibid-config)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="settings for the first `raibid gitops init` (repeatable)")
    p.add_argument("--receiver-url", default="http://webhook-receiver.flux-system.svc.cluster.local", metavar="URL",
                   help="the notification-controller's receiver as Gitea reaches it")
    p.add_argument("--timeout", type=duration, default=300.0, help="for the webhook and sync phases (default 5m)")
    p.add_argument("--dry-run", action="store_true", help="print every action; change nothing")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--from", dest="from_phase", metavar="PHASE", help=f"start at PHASE ({', '.join(PHASES)})")
    g.add_argument("--only", metavar="PHASE", help="run only PHASE")
    _kube_flags(p)
    p.set_defaults(handler=cmd_bootstrap)


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from raibid_gitops.clients.git import refuse_credentials
    from raibid_gitops.clients.gitea import Gitea
    from raibid_gitops.clients.kube import connect
    from raibid_gitops.errors import ConfigRepoError
    from raibid_gitops.gitops.bootstrap import Bootstrap, BootstrapOptions, PhaseReport, select_phases

    token = os.environ.get("RAIBID_GITEA_TOKEN")
    if not token:
        raise ConfigRepoError("RAIBID_GITEA_TOKEN is not set", hint="a Gitea admin token (bootstrap.sh exports it)")
    for flag, url in (("--gitea-url", args.gitea_url), ("--gitea-cluster-url", args.gitea_cluster_url),
                      ("--receiver-url", args.receiver_url)):
        if url:
            refuse_credentials(url, flag)
    opts = BootstrapOptions(
        gitea_url=args.gitea_url, gitea_cluster_url=args.gitea_cluster_url, owner=args.owner, repo=args.repo,
        dir=args.dir, assignments=tuple(args.assignments), receiver_url=args.receiver_url,
        namespace=args.namespace, timeout=args.timeout, dry_run=args.dry_run,
        phases=select_phases(args.from_phase, args.only),
    )

    def say(rep: PhaseReport) -> None:
        label = "plan" if args.dry_run else ("done" if rep.changed else "ok")
        if not rep.actions:
            print(f"{label:<5}{rep.name:<9}nothing to do", flush=True)
        for i, action in enumerate(rep.actions):
            print(f"{label if i == 0 else '':<5}{rep.name if i == 0 else '':<9}{action}", flush=True)

    with Gitea(args.gitea_url, token) as gitea:
        Bootstrap(opts, connect(args.kubeconfig, args.context), gitea, token, report=say).run()
    if args.dry_run:
        print("dry run: nothing was changed", file=sys.stderr)
    return 0
