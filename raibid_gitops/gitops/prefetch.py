"""A head start for `raibid gitops set`: its overlay build, begun before the settings model loads.

set validates with the settings model (pydantic: on a 2-core machine its import alone takes
about as long as ``kustomize build`` of the overlay), then edits the files, then builds them.
In the common case the edit can be foreseen from the request and the files alone: a value in
settings.yaml replaced in place, and the marked fields that name it. So the overlay's
kustomization directories are copied to a temporary directory with those edits, and kustomize
starts there at once, while the model imports and set does everything it always does.

The build is offered to the render cache under its input key (:func:`rendercache.offer`).
When set's own edit yields the same files, the key is the same and verify waits for this
build instead of starting one. When it does not — the prediction missed (a default not
written in the file, a value the model normalises, ...) — the build is simply never used and
is stopped at exit. Nothing here decides anything, and any surprise just skips the head start.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from raibid_gitops.gitops import layout

_INT = re.compile(r"-?[0-9]{1,18}")


class _Data:
    """Settings data read like Settings (``get``) for the marked fields; only written keys."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def get(self, key: str) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise LookupError(key)  # a default the file does not spell out: no prediction
            node = node[part]
        if isinstance(node, (dict, list)):
            raise LookupError(key)
        return node


def _changes(data: dict[str, Any], assignments: list[str]) -> dict[str, Any] | None:
    """The requested values, typed like the values the file holds now (set types them from the
    model; where the two could differ, there is no prediction)."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or key in out:
            return None
        try:
            current = _Data(data).get(key)
        except LookupError:
            return None
        if isinstance(current, bool):
            if raw not in ("true", "false"):
                return None
            out[key] = raw == "true"
        elif isinstance(current, int):
            if not _INT.fullmatch(raw):
                return None
            out[key] = int(raw)
        elif isinstance(current, str):
            out[key] = raw
        else:
            return None
    return out


def start(repo: Path | None, assignments: list[str]) -> None:
    """Start the overlay build ``set assignments`` will most likely ask for (see the module doc)."""
    try:
        _start(repo, assignments)
    except Exception:  # noqa: BLE001 - only a head start: set does everything itself anyway
        pass


def _libyaml_events(text: str) -> Any:
    import yaml

    return yaml.parse(text, Loader=yaml.CSafeLoader)


def _start(repo: Path | None, assignments: list[str]) -> None:
    # libyaml throughout (YAML 1.1 readings of a hand-edited file only make a prediction
    # miss): ruamel's pure-Python parser would cost this head start most of its lead.
    import yaml

    from raibid_gitops.gitops import kustomize, rendercache, setters, settingsdoc

    root = layout.find_repo_root(repo)
    if "agents.gpus" in {a.partition("=")[0] for a in assignments}:
        return  # a generated file changes with it; not foreseen here
    text = (root / layout.SETTINGS_PATH).read_text(encoding="utf-8")
    data = yaml.load(text, Loader=yaml.CSafeLoader)
    if not isinstance(data, dict):
        return
    changes = _changes(data, assignments)
    if not changes:
        return
    new_files = {layout.SETTINGS_PATH: settingsdoc.update_text(text, changes, layout.SETTINGS_PATH,
                                                                 parse=_libyaml_events)}
    for key, value in changes.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    view = _Data(data)
    for path in setters.marked_files(root):
        old = path.read_text(encoding="utf-8")
        new = setters.apply_text(old, view)  # type: ignore[arg-type]
        if new != old:
            new_files[path.relative_to(root).as_posix()] = new

    cmd = kustomize.command()
    overlay = root / layout.OVERLAY_DIR
    git = rendercache.git_dir(root)
    if git is None:
        return  # no cache to meet in
    dirs = rendercache.kustomization_dirs(overlay, git)
    if dirs is None or any(not rendercache.is_within(d, Path(os.path.realpath(root))) for d in dirs):
        return
    real_root = Path(os.path.realpath(root))
    tmp = Path(tempfile.mkdtemp(prefix="raibid-prefetch-"))
    try:
        for d in dirs:
            rel = d.relative_to(real_root)
            shutil.copytree(d, tmp / rel, symlinks=True, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".git"))
        for rel_file, content in new_files.items():
            target = tmp / rel_file
            if target.parent.exists():  # a marked file outside the overlay's directories: not read
                target.write_text(content, encoding="utf-8")
        rendercache.offer(tmp / layout.OVERLAY_DIR, cmd, tmp, git)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
