"""Printing data: ``-o json|yaml`` is pure data on stdout; tables for people.

Every command takes the same ``-o`` values (:data:`FORMATS`): ``text`` for people (tables,
lines), ``wide`` the same without cutting long cells (status messages, reasons), and ``json``
or ``yaml`` for programs. ``table``, the old spelling of list commands, still means ``text``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

#: The values of -o, on every command.
FORMATS = ("text", "wide", "json", "yaml")
#: Older spellings still accepted: list commands took ``-o table``.
ALIASES = {"table": "text"}
#: Formats that are pure data (no colour, no progress, nothing cut).
DATA_FORMATS = ("json", "yaml")


def output_format(text: str) -> str:
    """argparse type of ``-o``: one of :data:`FORMATS` (or an alias), else a usage error that
    quotes the value only in part."""
    value = ALIASES.get(text, text)
    if value not in FORMATS:
        from raibid_gitops.errors import shown

        raise argparse.ArgumentTypeError(
            f"{shown(text)} is not an output format; use one of {', '.join(FORMATS)} (table means text)")
    return value


def add_output_flag(parser: argparse.ArgumentParser, choices: Sequence[str] | None = None,
                    default: str = "text") -> None:
    """``-o/--output`` with the values every command takes. ``choices`` is ignored (commands
    used to list their own; every command now takes all of :data:`FORMATS`)."""
    default = ALIASES.get(default, default)
    parser.add_argument("-o", "--output", type=output_format, default=default, metavar="{" + ",".join(FORMATS) + "}",
                        help=f"output format (default {default}; wide: text without cutting long cells; "
                             "json/yaml: pure data)")


def is_data(fmt: str) -> bool:
    return fmt in DATA_FORMATS


def emit(data: Any, fmt: str, stream=None) -> None:
    stream = stream or sys.stdout
    if fmt == "json":
        stream.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        from ruamel.yaml import YAML

        y = YAML(typ="safe", pure=True)
        y.default_flow_style = False
        y.sort_base_mapping_type_on_output = False  # type: ignore[assignment]  # ruamel declares it as None
        y.dump(data, stream)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], stream=None) -> None:
    stream = stream or sys.stdout
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        stream.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() + "\n")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
