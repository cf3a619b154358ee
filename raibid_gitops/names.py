"""Names as git and Gitea allow them: repositories, refs, branches, commit ids.

Each check returns the reason a name is refused (``None`` when it is fine), so that the
settings model (pydantic wants ``ValueError``), the queue producer (``QueueError``), the
webhook endpoint and the agent (which re-checks a stream entry before it clones) share one
definition and word their refusal the same way.

Every pattern matches the whole string (``fullmatch``): ``$`` would also match before a
trailing newline, which is how ``main\\n`` once slipped into the queue and split log lines.
"""

from __future__ import annotations

import re

from raibid_gitops.errors import shown

#: Gitea's user and organisation names: letters, digits, ``-``, ``_``, ``.``; starting with a
#: letter or digit, no two of ``-._`` in a row, none at the end; at most 40 characters.
_OWNER = re.compile(r"[A-Za-z0-9][-._A-Za-z0-9]{0,39}")
_OWNER_RUNS = re.compile(r"[-._]{2,}|[-._]\Z")
#: Gitea's repository names: letters, digits, ``-``, ``_``, ``.``; at most 100 characters,
#: not ``.`` / ``..`` (they would climb out of the owner's directory in a URL or a path)
#: and not ending in a suffix Gitea reserves.
_REPO_NAME = re.compile(r"[-._A-Za-z0-9]{1,100}")
_REPO_RESERVED = frozenset({".", "..", "-"})
_REPO_SUFFIXES = (".git", ".wiki", ".rss", ".atom")
#: Characters a ref may hold here: git allows more (any byte but a few), but a ref also
#: travels through URLs, argv and log lines, so we keep to the portable set. A leading ``-``
#: would read as an option to git.
_REF_CHARS = re.compile(r"[A-Za-z0-9_./\-]{1,255}")
#: A commit id: SHA-1 (40) or SHA-256 (64) hex, or an abbreviation of at least 7.
_COMMIT = re.compile(r"[0-9a-f]{7,64}")
_FULL_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def owner_problem(owner: str) -> str | None:
    if not _OWNER.fullmatch(owner) or _OWNER_RUNS.search(owner):
        return (f"owner {shown(owner)} is not a Gitea user or organisation name (letters, digits, '-', '_', '.'; "
                "starting with a letter or digit, at most 40 characters, no two of '-._' in a row or at the end)")
    return None


def repo_name_problem(name: str) -> str | None:
    if not _REPO_NAME.fullmatch(name) or name in _REPO_RESERVED or name.lower().endswith(_REPO_SUFFIXES):
        return (f"repository name {shown(name)} is not a Gitea repository name (letters, digits, '-', '_', '.'; "
                "at most 100 characters; not '.' or '..'; not ending in .git or .wiki)")
    return None


def repo_problem(full_name: str) -> str | None:
    """``OWNER/NAME`` exactly as Gitea allows it: nothing that could climb out of a base URL."""
    owner, sep, name = full_name.partition("/")
    if not sep:
        return f"repository {shown(full_name)} is not OWNER/NAME"
    return owner_problem(owner) or repo_name_problem(name)


def ref_problem(ref: str) -> str | None:
    """A ref (``main``, ``refs/heads/main``, ``v1.2``) as ``git check-ref-format --allow-onelevel``
    accepts it, within the portable characters of :data:`_REF_CHARS`."""
    if not _REF_CHARS.fullmatch(ref) or ref.startswith("-"):
        return (f"ref {shown(ref)} is not a valid git ref (letters, digits, '_', '.', '/', '-'; "
                "at most 255 characters; not starting with '-')")
    parts = ref.split("/")
    if "" in parts:
        return f"ref {shown(ref)} is not a valid git ref (no leading, trailing or double '/')"
    for part in parts:
        if part.startswith("."):
            return f"ref {shown(ref)} is not a valid git ref (no part may start with '.')"
        if part.endswith(".lock"):
            return f"ref {shown(ref)} is not a valid git ref (no part may end with '.lock')"
    if ".." in ref:
        return f"ref {shown(ref)} is not a valid git ref (no '..')"
    if ref.endswith("."):
        return f"ref {shown(ref)} is not a valid git ref (must not end with '.')"
    return None


def branch_problem(branch: str) -> str | None:
    """A branch name (what follows ``refs/heads/``)."""
    problem = ref_problem(branch)
    if problem:
        return problem.replace("ref ", "branch ", 1).replace("git ref", "git branch name")
    if branch.startswith("refs/"):
        return f"branch {shown(branch)} is a full ref; give the branch name (e.g. main)"
    return None


def commit_problem(commit: str, *, full: bool = False) -> str | None:
    """A lower-case hex commit id (``full``: exactly 40 or 64 digits, as Gitea sends them)."""
    pattern = _FULL_COMMIT if full else _COMMIT
    if not pattern.fullmatch(commit):
        want = "40 or 64" if full else "7 to 64"
        return f"commit {shown(commit)} is not a commit id ({want} hexadecimal digits)"
    return None
