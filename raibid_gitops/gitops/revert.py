"""`raibid gitops revert [COMMIT] [--pr]`: undo a settings change as a new verified commit.

A config commit changes settings.yaml and the fields derived from it (marked fields, generated
files). Reverting it means setting the keys it changed back to their values before it, which is
exactly a `set` on today's head: the derived fields are recomputed from the merged settings,
verify runs, the commit is pushed (applied again on a moved head) or proposed as a pull request.
A key changed again since the reverted commit is a conflict and is reported, never overwritten.

A commit that changed anything else (a hand edit of a base manifest, a new file) is not a
settings change and cannot be undone this way: it is refused with what it touched, and `git
revert` is the tool for it (then `raibid gitops sync`, which verifies before it pushes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raibid_gitops import settings as settings_mod
from raibid_gitops.clients.git import Auth, Repo, auth_from_env, rev_parse
from raibid_gitops.errors import ConfigRepoError, GitError, SettingsError, shown
from raibid_gitops.gitops import generated, layout, setters
from raibid_gitops.gitops.change import MAX_ATTEMPTS, Progress, SetResult, _set_in


def _leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every setting in plain settings data (lists are one value)."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                out.update(_leaves(v, key + "."))
            else:
                out[key] = v
    return out


def _settings_at(g: Repo, commit: str) -> dict[str, Any]:
    try:
        text = g.show(commit, layout.SETTINGS_PATH)
    except GitError:
        return {}
    try:
        return settings_mod.load_data(text, f"{commit[:12]}:{layout.SETTINGS_PATH}")
    except SettingsError as exc:
        raise ConfigRepoError(f"{layout.SETTINGS_PATH} at {commit[:12]} does not parse: {exc.message}") from exc


def derived_files(root: Path) -> set[str]:
    """Files a settings change may touch: settings.yaml, every file with marked fields, and the
    generated files."""
    out = {layout.SETTINGS_PATH, *generated.generated_files(settings_mod.defaults())}
    out.update(p.relative_to(root).as_posix() for p in setters.marked_files(root))
    return out


def plan(g: Repo, commit: str) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """(full sha, subject, {key: value to restore}, {key: value the commit set}) for reverting
    ``commit``; raises ConfigRepoError when it is not a settings change."""
    if commit.startswith("-") or not commit.strip():
        raise ConfigRepoError(f"{shown(commit)} is not a commit", hint="e.g. raibid gitops revert HEAD")
    sha = rev_parse(g, commit)
    if sha is None:
        raise ConfigRepoError(f"{shown(commit)} is not a commit of {g.path}",
                              hint="`git log --oneline -- overlays/dgx-spark/settings.yaml` lists settings changes")
    parents = g.git("rev-list", "--parents", "-n", "1", sha).split()[1:]
    if not parents:
        raise ConfigRepoError(f"{sha[:12]} is the repository's first commit; there is nothing before it to go back to")
    # A merge (a merged pull request) is undone against its first parent: the branch before it.
    parent = parents[0]
    subject = g.git("log", "-1", "--format=%s", sha).strip()
    touched = set(g.git("diff", "--name-only", parent, sha).split())
    other = sorted(touched - derived_files(g.path))
    if other:
        listed = ", ".join(other[:5]) + (" ..." if len(other) > 5 else "")
        raise ConfigRepoError(
            f"{sha[:12]} ({shown(subject, 60)}) changed more than settings ({listed}); revert undoes settings "
            "changes only",
            hint=f"undo it with `git revert {sha[:12]}`, then `raibid gitops sync` (which verifies before pushing)",
        )
    before, after = _leaves(_settings_at(g, parent)), _leaves(_settings_at(g, sha))
    defaults = _leaves(settings_mod.defaults().data())
    restore: dict[str, Any] = {}
    made: dict[str, Any] = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if json.dumps(old, sort_keys=True, default=str) == json.dumps(new, sort_keys=True, default=str):
            continue
        if key not in defaults:
            continue  # not a setting (an unknown key the commit removed or added): verify judges it
        # A key the commit added goes back to its default: the same settings as before.
        restore[key] = old if key in before else defaults[key]
        made[key] = new if key in after else defaults[key]
    if not restore:
        raise ConfigRepoError(f"{sha[:12]} ({shown(subject, 60)}) changed no setting; there is nothing to revert")
    return sha, subject, restore, made


def revert(commit: str = "HEAD", *, repo: str | Path | None = None, pr: bool = False, dry_run: bool = False,
           message: str | None = None, author: tuple[str, str] | None = None, auth: Auth | None = None,
           remote: str = "origin", max_attempts: int = MAX_ATTEMPTS, gitea_url: str | None = None,
           progress: Progress | None = None) -> SetResult:
    """Revert the settings change ``commit`` made, as one verified commit (see the module doc)."""
    say = progress or (lambda _msg: None)
    root = layout.find_repo_root(Path(repo) if repo else None)
    g = Repo(root, auth or auth_from_env())
    sha, subject, restore, made = plan(g, commit)
    return _set_in(g, restore, message=message, pr=pr, dry_run=dry_run, author=author, remote=remote,
                   max_attempts=max_attempts, gitea_url=gitea_url, say=say, seen=made, revert_of=(sha, subject))
