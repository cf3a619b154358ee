"""Printing data: ``-o json|yaml`` is pure data on stdout; tables for people."""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence


def add_output_flag(parser, choices: Sequence[str] = ("yaml", "json"), default: str = "yaml") -> None:
    parser.add_argument("-o", "--output", choices=list(choices), default=default, help=f"output format (default {default})")


def emit(data: Any, fmt: str, stream=None) -> None:
    stream = stream or sys.stdout
    if fmt == "json":
        stream.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        from ruamel.yaml import YAML

        y = YAML(typ="safe", pure=True)
        y.default_flow_style = False
        y.sort_base_mapping_type_on_output = False
        y.dump(data, stream)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], stream=None) -> None:
    stream = stream or sys.stdout
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        stream.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
