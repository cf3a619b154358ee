"""sync, status, diff, suspend, resume: reconciling with Flux.

Kubernetes options follow the Flux CLI: ``--kubeconfig``, ``--context``, ``-n/--namespace``
(default flux-system), ``KUBECONFIG``; ``--timeout 5m``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from raibid_gitops.cli.output import add_output_flag, is_data

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.clients.kube import Kube

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """``5m``, ``90s``, ``1m30s``, ``300`` (seconds) -> seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        from raibid_gitops.errors import shown

        raise argparse.ArgumentTypeError(f"invalid duration {shown(text)} (use e.g. 90s, 5m, 1m30s)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _kube_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Kubernetes")
    g.add_argument("--kubeconfig", metavar="PATH",
                   help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)")
    g.add_argument("--context", help="kubeconfig context (default: the current one)")
    g.add_argument("-n", "--namespace", default="flux-system",
                   help="namespace of the Flux objects (default flux-system)")


def _dir_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-C", "--dir", type=Path, dest="dir", help="config repository (default: the current one)")


def register(cmds: argparse._SubParsersAction) -> None:
    p = cmds.add_parser(
        "sync", help="push, ask Flux to reconcile, and wait until this commit is applied",
        description="Fetch; verify and push unpushed commits (refusing a diverged branch; fast-forwarding a "
                    "branch that is behind), annotate the GitRepository with reconcile.fluxcd.io/requestedAt, "
                    "and watch until the Kustomizations have applied this commit (or a newer one containing it), "
                    "are Ready, and KEDA accepted the ScaledJob. Exit 0 when applied, 1 when verify, Flux or KEDA "
                    "reports a failure, 3 on timeout, 2 on other errors.")
    _dir_flag(p)
    p.add_argument("--kustomization", "--ks", default="raibid-config", metavar="NAME",
                   help="the Flux Kustomization to wait for (default raibid-config)")
    p.add_argument("--no-push", action="store_true", help="do not push; wait for what the remote has")
    p.add_argument("--no-verify", action="store_true",
                   help="push even if `raibid gitops verify` rejects the commit (emergencies only; says so loudly)")
    p.add_argument("--timeout", type=duration, default=300.0, help="give up after this long (default 5m)")
    p.add_argument("--wait-agents", action="store_true",
                   help="then wait until running agents report the new settings hash")
    p.add_argument("--redis-url", default=os.environ.get("RAIBID_REDIS_URL"),
                   help="Redis for --wait-agents (default: $RAIBID_REDIS_URL, else queue.redisAddress of the settings)")
    p.add_argument("--redis-password-file", help="file holding Redis's password (or RAIBID_REDIS_PASSWORD)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    add_output_flag(p)
    _kube_flags(p)
    p.set_defaults(handler=cmd_sync)

    p = cmds.add_parser("status", help="Flux's view: sources and kustomizations, and whether HEAD is applied")
    _dir_flag(p)
    p.add_argument("-A", "--all-namespaces", action="store_true", help="Flux objects of every namespace")
    p.add_argument("--watch", "-w", action="store_true", help="keep printing as the objects change")
    add_output_flag(p)
    _kube_flags(p)
    p.set_defaults(handler=cmd_status)

    p = cmds.add_parser(
        "diff", help="the overlay against the live cluster (server-side dry-run)",
        description="Render the overlay from the working tree (or --ref) and compare it with the live objects by "
                    "server-side dry-run apply as kustomize-controller. Exit 0: no change; 1: changes; >1: error.")
    _dir_flag(p)
    p.add_argument("--ref", help="render this commit instead of the working tree (e.g. HEAD, origin/main)")
    p.add_argument("--kustomization", "--ks", default="raibid-config", metavar="NAME",
                   help="the Flux Kustomization owning the objects (default raibid-config)")
    add_output_flag(p)
    _kube_flags(p)
    p.set_defaults(handler=cmd_diff)

    p = cmds.add_parser(
        "webhook", help="point the config repository's Gitea webhook at Flux's Receiver (a push applies at once)",
        description="Read the Receiver's path (status.webhookPath) and shared token (Secret raibid-webhook-token) "
                    "from the cluster and make the Gitea repository have one webhook posting pushes there, signed "
                    "with the token. Idempotent. The repository comes from -C DIR's origin or --gitea-url.")
    _dir_flag(p)
    p.add_argument("--gitea-url", metavar="URL", help="repository URL, e.g. http://HOST/raibid/raibid-config")
    p.add_argument("--receiver-url", default="http://webhook-receiver.flux-system.svc.cluster.local", metavar="URL",
                   help="the notification-controller's receiver as Gitea reaches it")
    p.add_argument("--dry-run", action="store_true", help="say what would change; change nothing")
    add_output_flag(p)
    _kube_flags(p)
    p.set_defaults(handler=cmd_webhook)

    p = cmds.add_parser(
        "reconcile", help="ask Flux to reconcile an object now and wait until it has (as `flux reconcile`)",
        description="Annotate the object with reconcile.fluxcd.io/requestedAt and watch until its controller has "
                    "handled that request at the current generation: Ready, or its failure's reason and message. "
                    "A Kustomization's source is asked first (--no-source skips it). For waiting on a commit of "
                    "the config repository, use `sync`. Exit 0 Ready, 1 failed, 3 timeout, 2 other errors.")
    p.add_argument("kind", nargs="?", choices=["kustomization", "ks", "source", "gitrepository"],
                   default="kustomization", help="what to reconcile (default kustomization)")
    p.add_argument("name", nargs="?", default="raibid-config", help="its name (default raibid-config)")
    p.add_argument("--no-source", action="store_true", help="do not ask a Kustomization's source to fetch first")
    p.add_argument("--timeout", type=duration, default=300.0, help="give up after this long (default 5m)")
    _dir_flag(p)
    add_output_flag(p)
    _kube_flags(p)
    p.set_defaults(handler=cmd_reconcile)

    for verb in ("suspend", "resume"):
        p = cmds.add_parser(verb, help=f"{verb} Flux reconciliation of a kustomization or source")
        p.add_argument("kind", nargs="?", choices=["kustomization", "ks", "source", "gitrepository"],
                       default="kustomization", help=f"what to {verb} (default kustomization)")
        p.add_argument("name", nargs="?", default="raibid-config", help="its name (default raibid-config)")
        _dir_flag(p)
        add_output_flag(p)
        _kube_flags(p)
        p.set_defaults(handler=cmd_suspend if verb == "suspend" else cmd_resume)


def _kube(args: argparse.Namespace) -> Kube:
    from raibid_gitops.clients.kube import connect

    return connect(args.kubeconfig, args.context)


def _root(d: Path | None) -> Path:
    from raibid_gitops.gitops.layout import find_repo_root

    return find_repo_root(d)


def cmd_sync(args: argparse.Namespace) -> int:
    from raibid_gitops.cli.progress import Progress
    from raibid_gitops.clients.redis import read_password
    from raibid_gitops.gitops.sync import SyncOptions, sync

    root = _root(args.dir)
    opts = SyncOptions(
        kustomization=args.kustomization, namespace=args.namespace, timeout=args.timeout, push=not args.no_push,
        verify=not args.no_verify,
        wait_agents=args.wait_agents, redis_url=args.redis_url,
        redis_password=read_password(args.redis_password_file) if args.wait_agents else None,
    )
    result = sync(root, _kube(args), opts, Progress(quiet=args.quiet))
    if not is_data(args.output):
        revs = ", ".join(f"{k} at {v}" for k, v in result.kustomizations.items())
        print(f"applied {result.commit[:12]} in {result.elapsed:.1f}s: {revs}")
    else:
        from raibid_gitops.cli.output import emit

        emit(result.to_dict(), args.output)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from raibid_gitops.cli.status_view import run_status

    if args.dir is not None:
        _root(args.dir)  # a wrong -C is refused before anything is asked of the cluster
    return run_status(_kube(args), namespace=None if args.all_namespaces else args.namespace,
                      repo_dir=args.dir, output=args.output, watch=args.watch)


def cmd_diff(args: argparse.Namespace) -> int:
    from raibid_gitops.gitops.drift import diff

    root = _root(args.dir)  # before the cluster is asked anything
    report = diff(_kube(args), root, ref=args.ref, kustomization=args.kustomization, namespace=args.namespace)
    if is_data(args.output):
        from raibid_gitops.cli.output import emit

        emit(report.to_dict(), args.output)
    else:
        sys.stdout.write(report.format_text())
    # As `flux diff`: 0 no change, 1 changes (errors exit 2 through the error path).
    return 1 if report.changed else 0


def cmd_webhook(args: argparse.Namespace) -> int:
    from raibid_gitops.clients.git import refuse_credentials
    from raibid_gitops.gitops.status_report import client_for, resolve_target
    from raibid_gitops.gitops.webhook import connect_webhook

    refuse_credentials(args.receiver_url, "--receiver-url")
    root = None if args.gitea_url else _root(args.dir)
    ref = resolve_target(root, url=args.gitea_url)
    with client_for(ref) as client:
        result = connect_webhook(_kube(args), client, ref, namespace=args.namespace,
                                 receiver_url=args.receiver_url, dry_run=args.dry_run)
    print(f"{result.action}: {ref.full_name} webhook -> {args.receiver_url.rstrip('/')}/hook/...", file=sys.stderr)
    if is_data(args.output):
        from raibid_gitops.cli.output import emit

        # The URL's path is derived from the receiver's secret token: not printed.
        emit({"repository": ref.full_name, "action": result.action, "hookId": result.hook_id,
              "receiver": args.receiver_url.rstrip("/")}, args.output)
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from raibid_gitops.gitops import flux

    if args.dir is not None:
        _root(args.dir)  # -C is checked as on every command; the Flux objects are named by NAME
    kind = flux.KUSTOMIZATION if args.kind in ("kustomization", "ks") else flux.GIT_REPOSITORY
    ref = flux.object_ref(kind, args.name, args.namespace)
    revision = flux.reconcile(_kube(args), ref, with_source=not args.no_source, timeout=args.timeout,
                              report=lambda text: print(text, file=sys.stderr, flush=True))
    print(f"{ref} reconciled at {flux.format_revision(revision) or '(no revision)'}", file=sys.stderr)
    if is_data(args.output):
        from raibid_gitops.cli.output import emit

        emit({"kind": kind, "namespace": args.namespace, "name": args.name, "revision": revision}, args.output)
    else:
        print(revision)
    return 0


def _suspend(args: argparse.Namespace, suspend: bool) -> int:
    from raibid_gitops.gitops import flux

    if args.dir is not None:
        _root(args.dir)  # -C is checked as on every command; the Flux objects are named by NAME
    kind = flux.KUSTOMIZATION if args.kind in ("kustomization", "ks") else flux.GIT_REPOSITORY
    flux.set_suspended(_kube(args), flux.object_ref(kind, args.name, args.namespace), suspend)
    print(f"{kind} {args.namespace}/{args.name} {'suspended' if suspend else 'resumed'}", file=sys.stderr)
    if is_data(args.output):
        from raibid_gitops.cli.output import emit

        emit({"kind": kind, "namespace": args.namespace, "name": args.name, "suspended": suspend}, args.output)
    return 0


def cmd_suspend(args: argparse.Namespace) -> int:
    return _suspend(args, True)


def cmd_resume(args: argparse.Namespace) -> int:
    return _suspend(args, False)
