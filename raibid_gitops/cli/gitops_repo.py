"""init, render, verify, get, schema."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raibid_gitops.cli.options import add_dir_flag, one_dir
from raibid_gitops.cli.output import add_output_flag, is_data


def register(cmds: argparse._SubParsersAction) -> None:
    p = cmds.add_parser("init", help="write a new config repository from the templates",
                        description="Write a config repository (base/, overlays/dgx-spark/, clusters/dgx-spark/) "
                                    "from the shipped templates and settings, git init it and commit.")
    p.add_argument("dir_arg", nargs="?", type=Path, metavar="DIR", help="target directory (new or empty)")
    add_dir_flag(p, what="target directory (the same as DIR)")
    p.add_argument("--remote", metavar="URL", help="add this URL as remote 'origin' (no credentials in it)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set agents.maxReplicas=6 (repeatable)")
    p.add_argument("--nodes", type=_node_count, metavar="N",
                   help="N DGX Spark nodes: cluster.nodes.count=N and cluster.capacity all of them "
                        "(per-node shape from --set cluster.nodes.*, else a DGX Spark)")
    p.add_argument("--force", action="store_true", help="replace a non-empty directory")
    add_output_flag(p)
    p.set_defaults(handler=cmd_init)

    p = cmds.add_parser("render", help="print the built overlay (kustomize build)",
                        description="Print the built overlay (or the Flux objects) as kustomize builds them; "
                                    "-o json prints them as one JSON List.")
    p.add_argument("dir_arg", nargs="?", type=Path, metavar="DIR", help="config repository (default: the current one)")
    add_dir_flag(p)
    p.add_argument("--flux", action="store_true", help="render clusters/dgx-spark (the Flux objects) instead")
    add_output_flag(p)
    p.set_defaults(handler=cmd_render)

    p = cmds.add_parser("verify", help="check settings, marked fields, kustomize build and schemas",
                        description="Exit 0 when the config repository is consistent; 1 with every problem "
                                    "listed as file:line: field: message (expected, found).")
    p.add_argument("dir_arg", nargs="?", type=Path, metavar="DIR", help="config repository (default: the current one)")
    add_dir_flag(p)
    add_output_flag(p)
    p.add_argument("--commit-status", action="store_true",
                   help="also report the result as Gitea commit status raibid/verify on HEAD")
    p.set_defaults(handler=cmd_verify)

    p = cmds.add_parser("get", help="print one setting, or all")
    p.add_argument("key", nargs="?", help="dotted key, e.g. agents.maxReplicas")
    add_dir_flag(p)
    add_output_flag(p)
    p.set_defaults(handler=cmd_get)

    p = cmds.add_parser("schema", help="print the JSON Schema of settings.yaml",
                        description="Print the JSON Schema of settings.yaml (the package's: the same for every "
                                    "repository; -C is checked like everywhere else).")
    add_dir_flag(p)
    add_output_flag(p)
    p.set_defaults(handler=cmd_schema)

    p = cmds.add_parser(
        "credential", help="git credential helper: the Gitea token from RAIBID_GITEA_TOKEN (init configures it)",
        description="Speaks git's credential-helper protocol. For `get` it answers with RAIBID_GITEA_USER (default "
                    "raibid) and the token in RAIBID_GITEA_TOKEN or the file RAIBID_GITEA_TOKEN_FILE; `store` and "
                    "`erase` do nothing, so no token is ever written to disk. `raibid gitops init --remote URL` "
                    "configures it for URL's host only.")
    p.add_argument("operation", choices=("get", "store", "erase"))
    p.set_defaults(handler=cmd_credential)


def _root(d: Path | None) -> Path:
    from raibid_gitops.gitops.layout import find_repo_root

    return find_repo_root(d)


def _node_count(text: str) -> int:
    import re

    from raibid_gitops.settings import MAX_NODES

    # Digits only, matched whole: " 3", "3\n" and "3.0" are refused, never read as 3.
    if not re.fullmatch(r"[0-9]{1,2}", text) or not 1 <= int(text) <= MAX_NODES:
        raise argparse.ArgumentTypeError(f"must be a number of nodes from 1 to {MAX_NODES}")
    return int(text)


def cmd_init(args: argparse.Namespace) -> int:
    from raibid_gitops.errors import ConfigRepoError
    from raibid_gitops.gitops.generate import init

    target = one_dir(args)
    if target is None:
        raise ConfigRepoError("init needs the directory to create", hint="raibid gitops init DIR (or -C DIR)")
    res = init(target, assignments=args.assignments, remote=args.remote, force=args.force, nodes=args.nodes)
    print(f"initialised {res.path} at {res.commit[:12]} (settings {res.settings_hash})", file=sys.stderr)
    if not res.kustomize_checked:
        print("warning: kustomize not found; the overlay was not built (install kustomize, then run "
              "`raibid gitops verify`)", file=sys.stderr)
    if is_data(args.output):
        from raibid_gitops.cli.output import emit

        emit({"path": str(res.path), "commit": res.commit, "settingsHash": res.settings_hash,
              "kustomizeChecked": res.kustomize_checked}, args.output)
    else:
        print(res.path)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from raibid_gitops.gitops import layout, rendercache

    root = _root(one_dir(args))
    build = rendercache.build_all([root / (layout.CLUSTER_DIR if args.flux else layout.OVERLAY_DIR)],
                                  objects=False, root=root)[0]
    if build.error is not None:
        raise build.error
    assert build.text is not None
    if args.output == "json":
        from raibid_gitops.cli.output import emit
        from raibid_gitops.gitops import kustomize

        emit({"apiVersion": "v1", "kind": "List", "items": kustomize.parse(build.text)}, "json")
    else:
        sys.stdout.write(build.text)  # text, wide and yaml: the YAML as kustomize wrote it
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from raibid_gitops.gitops.verify import verify_cached

    root = _root(one_dir(args))
    report = verify_cached(root)
    if not is_data(args.output):
        for p in report.problems:
            print(p.format())
        summary = (f"ok: {report.checked_fields} marked fields, {len(report.objects)} objects valid"
                   if report.ok else f"{len(report.problems)} problem(s)")
        print(summary, file=sys.stderr)
    else:
        from raibid_gitops.cli.output import emit

        emit(report.to_dict(), args.output)
    if args.commit_status:
        from raibid_gitops.gitops.status_report import report_commit_status

        posted = report_commit_status(root, report)
        print(f"commit status raibid/verify={posted.state} on {posted.repo}@{posted.sha[:12]}", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_get(args: argparse.Namespace) -> int:
    from raibid_gitops.cli.output import emit
    from raibid_gitops.gitops.layout import SETTINGS_PATH
    from raibid_gitops.settings import load_path

    root = _root(args.dir)
    settings = load_path(root / SETTINGS_PATH)
    _say_if_behind(root, settings.gitea.branch)
    value = settings.get(args.key) if args.key else settings.data()
    if args.output == "json":
        emit(value, "json")
    elif not isinstance(value, (dict, list)):
        # One scalar prints bare (text and yaml alike), ready for $(raibid gitops get KEY).
        print("true" if value is True else "false" if value is False else value)
    else:
        emit(value, "yaml")
    return 0


def _say_if_behind(root: Path, branch: str) -> None:
    """A note on stderr when the checkout is behind the remote branch as last fetched: what get
    read is then not what Flux applies (e.g. right after a pull request was merged)."""
    from raibid_gitops.clients.git import Repo, behind
    from raibid_gitops.errors import GitError

    try:
        n = behind(Repo(root), branch)
    except GitError:
        return
    if n:
        print(f"note: {root} is {n} commit(s) behind origin/{branch} (as last fetched): these are the settings "
              "of your checkout, not of the branch Flux applies; `git pull` to read those", file=sys.stderr)


def cmd_credential(args: argparse.Namespace) -> int:
    """git credential helper (see `git help credentials`). Reads the request from stdin (bounded:
    a credential request is a few short lines) and answers only http(s) requests."""
    request: dict[str, str] = {}
    for _ in range(64):
        line = sys.stdin.readline(4096)
        if not line.strip():
            break
        key, sep, value = line.rstrip("\n").partition("=")
        if sep:
            request[key] = value
    if args.operation != "get" or request.get("protocol") not in ("http", "https"):
        return 0  # never store or erase anything; other protocols are not ours
    from raibid_gitops.clients.git import auth_from_env

    auth = auth_from_env()
    if auth is not None:
        sys.stdout.write(f"username={auth.username}\npassword={auth.token}\n")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from raibid_gitops.gitops.generated import schema_json

    if args.dir is not None:
        _root(args.dir)
    text = schema_json()
    if args.output == "yaml":
        import json

        from raibid_gitops.cli.output import emit

        emit(json.loads(text), "yaml")
    else:
        sys.stdout.write(text)  # the schema is JSON: text, wide and json alike
    return 0
