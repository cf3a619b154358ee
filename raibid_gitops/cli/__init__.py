"""The `raibid` command line: thin; each command parses options and calls one library function.

Start-up must stay fast (`raibid --help` imports no heavy library): subcommand modules only
build argparse parsers at import time; their handlers import the libraries they need.
Data goes to stdout, progress to stderr, colour only on a TTY.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from raibid_gitops import __version__

#: Subcommand groups, each a module in this package exposing ``register(subparsers)``.
GROUPS = ("gitops", "queue", "tui", "bootstrap")


def first_word(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names (its first word that is not an option), when that alone
    decides which parsers are needed: not when help is asked for before it (help lists them all)."""
    for word in argv:
        if word in ("-h", "--help", "--"):
            return None
        if not word.startswith("-"):
            return word
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given the ``argv`` it is about to parse, only the parsers that
    argv reaches (building all of them is about 15 ms, a tenth of `gitops set`). A word that
    names no subcommand gets them all, so its error lists every choice."""
    parser = argparse.ArgumentParser(
        prog="raibid",
        description="raibid-ci GitOps: change the CI agent pool by commits, reconcile with Flux, watch it run.",
    )
    parser.add_argument("--version", action="version", version=f"raibid-gitops {__version__}")
    parser.add_argument("--debug", action="store_true", default=os.environ.get("RAIBID_DEBUG") == "1",
                        help="after an error, also print its traceback and causes (or RAIBID_DEBUG=1); "
                             "it may show values the error message leaves out")
    sub = parser.add_subparsers(dest="group", metavar="{gitops,queue,tui,bootstrap}")
    import importlib

    words = list(argv) if argv is not None else []
    wanted = first_word(words)
    # The words after the group, when argv names one: only its parsers are built.
    rest = words[words.index(wanted) + 1:] if argv is not None and wanted in GROUPS else None
    for name in GROUPS:
        if rest is not None and name != wanted:
            continue
        try:
            module = importlib.import_module(f"raibid_gitops.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"raibid_gitops.cli.{name}":
                raise
            continue
        if name == "gitops":
            module.register(sub, rest)
        else:
            module.register(sub)
    return parser


def use_color(stream=None) -> bool:
    stream = stream or sys.stderr
    return stream.isatty() and "NO_COLOR" not in os.environ


def fail(message: str, code: int = 2) -> int:
    prefix = "\033[31merror:\033[0m " if use_color() else "error: "
    print(prefix + message, file=sys.stderr)
    return code


def _debug(args: argparse.Namespace, exc: BaseException) -> None:
    """With --debug: the traceback behind a user-facing error, its causes included (library
    errors are kept as the cause of ours: ``raise ... from exc``)."""
    if getattr(args, "debug", False):
        import traceback

        traceback.print_exception(exc, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    from raibid_gitops.errors import RaibidError

    try:
        return int(handler(args) or 0)
    except RaibidError as exc:
        _debug(args, exc)
        return fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except BrokenPipeError:
        # The reader went away (`raibid gitops render | head`): not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # Commands translate the file-system errors they expect; one they did not (a disk
        # full mid-write, a permission changed under us) still gets one line, not a traceback.
        _debug(args, exc)
        where = f" ({exc.filename})" if exc.filename else ""
        return fail(f"{exc.strerror or exc}{where}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
