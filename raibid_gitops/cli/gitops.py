"""`raibid gitops ...`: the config repository. Subcommands are grouped by area, one module each:

- ``gitops_repo``   init, render, verify, get, schema
- ``gitops_change`` set, pr (changes as commits and pull requests)
- ``gitops_sync``   sync, status, diff, suspend, resume (reconciling with Flux)
"""

from __future__ import annotations

import argparse
import importlib

AREAS = ("gitops_repo", "gitops_change", "gitops_sync")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("gitops", help="generate, change, verify and reconcile the config repository",
                            description="Generate, change, verify and reconcile the raibid-ci config repository.")
    cmds = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in AREAS:
        try:
            module = importlib.import_module(f"raibid_gitops.cli.{area}")
        except ModuleNotFoundError as exc:
            if exc.name != f"raibid_gitops.cli.{area}":
                raise
            continue
        module.register(cmds)
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])
