"""Options every `raibid gitops` command shares: ``-C DIR`` (the config repository) and the
argparse types of values several commands take (a pull request number).

Only argparse and pathlib here: building the parser must stay cheap.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

#: Gitea numbers pull requests with an int64; 18 digits always fit, and nobody has more.
PR_NUMBER_DIGITS = 18


def add_dir_flag(p: argparse.ArgumentParser, *, dest: str = "dir", what: str = "config repository") -> None:
    p.add_argument("-C", "--dir", dest=dest, type=Path, metavar="DIR",
                   help=f"{what} (default: the one around the current directory)")


def pr_number(text: str) -> int:
    """A pull request number as given on the command line: ``7`` or ``#7``."""
    digits = text[1:] if text.startswith("#") else text
    if not re.fullmatch(rf"[0-9]{{1,{PR_NUMBER_DIGITS}}}", digits) or int(digits) < 1:
        from raibid_gitops.errors import shown

        raise argparse.ArgumentTypeError(
            f"{shown(text)} is not a pull request number (a number from 1, at most {PR_NUMBER_DIGITS} digits, "
            "e.g. 7 or #7; `raibid gitops pr list` shows them)")
    return int(digits)


def one_dir(args: argparse.Namespace, positional: str = "dir_arg", option: str = "dir") -> Path | None:
    """The repository of a command that takes it both as an argument and as ``-C DIR``."""
    a, b = getattr(args, positional, None), getattr(args, option, None)
    if a is not None and b is not None and Path(a) != Path(b):
        from raibid_gitops.errors import ConfigRepoError

        raise ConfigRepoError("the repository is given twice (DIR and -C DIR) with different values",
                              hint="give it once: DIR or -C DIR")
    return a if a is not None else b
