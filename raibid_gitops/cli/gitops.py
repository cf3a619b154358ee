"""`raibid gitops ...`: the config repository. Subcommands are grouped by area, one module each:

- ``gitops_repo``   init, render, verify, get, schema
- ``gitops_change`` set, pr (changes as commits and pull requests)
- ``gitops_sync``   sync, status, diff, suspend, resume (reconciling with Flux)
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

AREAS = ("gitops_repo", "gitops_change", "gitops_sync")
#: The area of each command: `raibid gitops set ...` builds only its area's parsers
#: (tests/test_cli_consistency.py checks this against what the areas register).
COMMANDS = {
    **dict.fromkeys(("init", "render", "verify", "get", "schema", "credential"), "gitops_repo"),
    **dict.fromkeys(("set", "revert", "pr"), "gitops_change"),
    **dict.fromkeys(("sync", "status", "diff", "webhook", "reconcile", "suspend", "resume"), "gitops_sync"),
}


def register(sub: argparse._SubParsersAction, argv: Sequence[str] | None = None) -> None:
    """``argv``: the words after ``gitops`` when only the command they name needs a parser."""
    from raibid_gitops.cli import first_word

    parser = sub.add_parser("gitops", help="generate, change, verify and reconcile the config repository",
                            description="Generate, change, verify and reconcile the raibid-ci config repository.")
    cmds = parser.add_subparsers(dest="command", metavar="COMMAND")
    only = COMMANDS.get(first_word(argv) or "") if argv is not None else None
    for area in AREAS:
        if only is not None and area != only:
            continue
        try:
            module = importlib.import_module(f"raibid_gitops.cli.{area}")
        except ModuleNotFoundError as exc:
            if exc.name != f"raibid_gitops.cli.{area}":
                raise
            continue
        module.register(cmds)
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])
