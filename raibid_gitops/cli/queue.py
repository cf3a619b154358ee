"""`raibid queue ...`: the job queue. Thin: each command parses options and calls one function
of :mod:`raibid_gitops.queue`. Only argparse is imported here; handlers import the rest.

Settings (stream, group, limits) come from ``--settings FILE``, else the config repository
around the current directory, else the defaults. Redis from ``--redis-url`` /
$RAIBID_REDIS_URL, else ``queue.redisAddress``; its password from ``--redis-password-file`` /
$RAIBID_REDIS_PASSWORD_FILE / $RAIBID_REDIS_PASSWORD.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.queue.jobs import Job


def _common(p: argparse.ArgumentParser, output: bool = True) -> None:
    p.add_argument("--settings", metavar="FILE", default=None,
                   help="settings.yaml to take the queue names from (default: the config repository's, else defaults)")
    p.add_argument("--redis-url", default=os.environ.get("RAIBID_REDIS_URL"),
                   help="Redis URL without password (default: $RAIBID_REDIS_URL, else queue.redisAddress)")
    p.add_argument("--redis-password-file", default=None, help="file holding Redis's password")
    if output:
        from raibid_gitops.cli.output import add_output_flag

        add_output_flag(p)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("queue", help="submit and inspect CI jobs on the Redis job stream",
                            description="Submit and inspect CI jobs, dead letters, and serve Gitea push webhooks.")
    cmds = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = cmds.add_parser("submit", help="queue a job for a repository at a ref (and commit)")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME")
    p.add_argument("--ref", required=True, help="branch or ref, e.g. main or refs/heads/main")
    p.add_argument("--commit", default="", metavar="SHA", help="exact commit to build (default: the ref's head)")
    p.add_argument("--no-checkout", action="store_true",
                   help="run the default pipeline in an empty directory, without cloning (smoke tests, benchmarks)")
    _common(p)
    p.set_defaults(handler=cmd_submit)

    p = cmds.add_parser("list", help="recent jobs, newest first")
    p.add_argument("--state", default=None, help="only jobs in this state (queued, running, succeeded, ...)")
    p.add_argument("--limit", type=_limit, default=50, help="at most this many jobs (1-1000, default 50)")
    _common(p)
    p.set_defaults(handler=cmd_list)

    p = cmds.add_parser("status", help="one job's status record")
    p.add_argument("job")
    _common(p)
    p.set_defaults(handler=cmd_status)

    p = cmds.add_parser("logs", help="a job's log lines")
    p.add_argument("job")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing new lines until the job finishes (-o json: one object per line)")
    _common(p)
    p.set_defaults(handler=cmd_logs)

    p = cmds.add_parser("cancel", help="cancel a queued job, or stop a running one")
    p.add_argument("job")
    _common(p)
    p.set_defaults(handler=cmd_cancel)

    p = cmds.add_parser("stats", help="length, lag, pending, consumers, oldest pending age, dead letters")
    _common(p)
    p.set_defaults(handler=cmd_stats)

    dead = cmds.add_parser("dead", help="the dead-letter stream: list | retry JOB | drop JOB")
    dcmds = dead.add_subparsers(dest="dead_command", metavar="COMMAND")
    p = dcmds.add_parser("list", help="dead letters, newest first, with the reason")
    _common(p)
    p.set_defaults(handler=cmd_dead_list)
    p = dcmds.add_parser("retry", help="queue a dead job again")
    p.add_argument("job")
    _common(p)
    p.set_defaults(handler=cmd_dead_retry)
    p = dcmds.add_parser("drop", help="remove a job from the dead-letter list (its record stays 'dead')")
    p.add_argument("job")
    _common(p)
    p.set_defaults(handler=cmd_dead_drop)
    dead.set_defaults(handler=lambda args: (dead.print_help(sys.stderr), 2)[1])

    p = cmds.add_parser("serve-webhooks", help="accept Gitea push webhooks and queue a job per push",
                        description="Accept Gitea push webhooks (HMAC-SHA256 checked) and queue a job per push. "
                                    "Listens on 127.0.0.1 unless told otherwise: to let Gitea in the cluster reach it, "
                                    "--listen 0.0.0.0:8080 behind a Service and a NetworkPolicy that admits only "
                                    "Gitea.")
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:8080; port 0 picks a free one)")
    p.add_argument("--secret-file", default=None,
                   help="file with the webhook secret (default: $RAIBID_WEBHOOK_SECRET_FILE or $RAIBID_WEBHOOK_SECRET)")
    _common(p, output=False)  # a server: it prints no result
    p.set_defaults(handler=cmd_serve_webhooks)

    parser.set_defaults(handler=lambda args: (parser.print_help(sys.stderr), 2)[1])


# -- plumbing -------------------------------------------------------------------------------


def _limit(text: str) -> int:
    # A bound, so that `list` cannot be asked to read the whole index in one call.
    import re

    if not re.fullmatch(r"[0-9]{1,4}", text) or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError("must be a number from 1 to 1000")
    return int(text)



def _settings(args: argparse.Namespace):  # -> Settings
    from pathlib import Path

    from raibid_gitops import settings as st

    if args.settings:
        return st.load_path(Path(args.settings))
    try:
        from raibid_gitops.errors import ConfigRepoError
        from raibid_gitops.gitops.layout import SETTINGS_PATH, find_repo_root

        try:
            return st.load_path(find_repo_root() / SETTINGS_PATH)
        except ConfigRepoError:
            pass
    except ImportError:  # pragma: no cover - layout is another area's module
        pass
    return st.defaults()


def _client(args: argparse.Namespace, settings):  # -> redis.Redis
    from raibid_gitops.clients.redis import connect, read_password

    return connect(args.redis_url, settings=settings, password=read_password(args.redis_password_file))


def _emit(args: argparse.Namespace, data: Any, headers: list[str], rows: list[list[Any]]) -> None:
    from raibid_gitops.cli.output import emit, is_data, table

    if is_data(args.output):
        emit(data, args.output)
    else:
        table(headers, rows)


def _job_rows(jobs: Iterable[Job], wide: bool = False) -> list[list[Any]]:
    from raibid_gitops.times import iso_seconds

    # A REASON can be long (a git error); the table keeps its first line, -o wide all of it.
    return [[j.id, j.state, j.repo, j.ref, j.commit if wide else (j.commit or "")[:12], iso_seconds(j.submitted_at),
             j.agent, "" if j.exit_code is None else j.exit_code,
             " ".join(j.reason.split()) if wide else (j.reason.splitlines() or [""])[0]] for j in jobs]


_JOB_HEADERS = ["JOB", "STATE", "REPO", "REF", "COMMIT", "SUBMITTED", "AGENT", "EXIT", "REASON"]


# -- handlers -------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    from raibid_gitops import contract as c
    from raibid_gitops.queue import JobSpec, submit

    settings = _settings(args)
    spec = JobSpec(repo=args.repo, ref=args.ref, commit=args.commit,
                   checkout=c.CHECKOUT_NONE if args.no_checkout else c.CHECKOUT_GIT)
    done = submit(_client(args, settings), settings, spec)
    from raibid_gitops.cli.output import emit, is_data

    if not done.durable:
        print(f"warning: job {done.job_id} is queued on the primary, but {done.replicas} of the "
              f"{done.replicas_wanted} replica(s) asked for (queue.sentinel.ackReplicas) confirmed it in time: "
              "it would be lost if the primary failed before a replica caught up", file=sys.stderr)
    if is_data(args.output):
        emit({"job": done.job_id, "entry": done.entry_id, "durable": done.durable, "replicas": done.replicas},
             args.output)
    else:
        print(done.job_id)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from raibid_gitops.queue import list_jobs

    settings = _settings(args)
    jobs = list_jobs(_client(args, settings), limit=args.limit, state=args.state)
    _emit(args, [j.to_dict() for j in jobs], _JOB_HEADERS, _job_rows(jobs, args.output == "wide"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from raibid_gitops.queue import get_job

    settings = _settings(args)
    job = get_job(_client(args, settings), args.job)
    _emit(args, job.to_dict(), _JOB_HEADERS, _job_rows([job], args.output == "wide"))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from raibid_gitops.queue.jobs import follow_logs, read_logs

    settings = _settings(args)
    client = _client(args, settings)
    lines = follow_logs(client, args.job) if args.follow else read_logs(client, args.job)
    from raibid_gitops.cli.output import emit, is_data

    if is_data(args.output) and not args.follow:
        emit([line.to_dict() for line in lines], args.output)
        return 0
    for line in lines:
        if args.output == "json":  # following: JSON Lines, one object as each line comes
            import json

            print(json.dumps(line.to_dict()), flush=True)
        elif args.output == "yaml":  # following: one item at a time of the same YAML list
            emit([line.to_dict()], "yaml")
            sys.stdout.flush()
        else:
            print(line.format(), flush=args.follow)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from raibid_gitops.queue import cancel

    settings = _settings(args)
    result = cancel(_client(args, settings), settings, args.job)
    print(result.message(), file=sys.stderr)
    from raibid_gitops.cli.output import emit, is_data

    if is_data(args.output):
        emit({"job": result.job_id, "outcome": result.outcome, "state": result.state or None}, args.output)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from raibid_gitops.queue import stats

    settings = _settings(args)
    s = stats(_client(args, settings), settings)
    age = "" if s.oldest_pending_age_seconds is None else f"{s.oldest_pending_age_seconds:.1f}s"
    _emit(args, s.to_dict(),
          ["STREAM", "GROUP", "LENGTH", "LAG", "PENDING", "CONSUMERS", "OLDEST PENDING", "DEAD", "AGENTS"],
          [[s.stream, s.group if s.group_exists else f"{s.group} (missing)", s.length,
            "" if s.lag is None else s.lag, s.pending, s.consumers, age, s.dead_letters, s.agents]])
    from raibid_gitops.cli.output import is_data, table
    from raibid_gitops.times import iso_seconds

    if not is_data(args.output) and s.redis is not None:

        r = s.redis
        last = r.failovers[-1] if r.failovers else None
        print()
        table(["REDIS", "PRIMARY", "REPLICAS", "SENTINELS", "FAILOVERS", "LAST FAILOVER"],
              [[r.mode, r.primary,
                ", ".join(f"{x.address} ({x.state}, lag {'-' if x.lag_seconds is None else x.lag_seconds}s)"
                          for x in r.replicas) or "none",
                "-" if r.sentinels is None else f"{r.sentinels} (quorum {r.quorum})",
                len(r.failovers) if r.mode == "sentinel" else "-",
                f"{iso_seconds(last.at)} {last.old} -> {last.new}" if last else ""]])
    return 0


def cmd_dead_list(args: argparse.Namespace) -> int:
    from raibid_gitops.queue.dead_letters import list_dead

    settings = _settings(args)
    dead = list_dead(_client(args, settings), settings)
    _emit(args, [d.to_dict() for d in dead], ["JOB", "DELIVERIES", "REPO", "REF", "REASON"],
          [[d.job_id, d.deliveries, d.fields.get("repo", ""), d.fields.get("ref", ""), d.reason] for d in dead])
    return 0


def cmd_dead_retry(args: argparse.Namespace) -> int:
    from raibid_gitops.queue.dead_letters import retry

    settings = _settings(args)
    retry(_client(args, settings), settings, args.job)
    print(f"job {args.job} queued again", file=sys.stderr)
    from raibid_gitops.cli.output import emit, is_data

    if is_data(args.output):
        emit({"job": args.job, "state": "queued"}, args.output)
    return 0


def cmd_dead_drop(args: argparse.Namespace) -> int:
    from raibid_gitops.queue.dead_letters import drop

    settings = _settings(args)
    drop(_client(args, settings), settings, args.job)
    print(f"job {args.job} removed from the dead-letter list", file=sys.stderr)
    from raibid_gitops.cli.output import emit, is_data

    if is_data(args.output):
        emit({"job": args.job, "dropped": True}, args.output)
    return 0


def cmd_serve_webhooks(args: argparse.Namespace) -> int:
    import logging

    from raibid_gitops.queue import submit
    from raibid_gitops.queue.jobs import ensure_group
    from raibid_gitops.queue.webhooks import WebhookServer, parse_listen, read_secret

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    host, port = parse_listen(args.listen)
    settings = _settings(args)
    secret = read_secret(args.secret_file)
    client = _client(args, settings)
    ensure_group(client, settings)  # fail early if Redis is unreachable, and KEDA needs the group
    server = WebhookServer(host, port, secret, lambda spec: submit(client, settings, spec))
    bound_host, bound_port = server.start()
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"listening for Gitea push webhooks on {shown_host}:{bound_port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
