"""Where a field of a rendered object was written: the file and line of the kustomization's
sources, so that a schema error points at the line to fix (``base/redis.yaml:23``), not at
the rendered output nobody edits.

The kustomization is read as kustomize reads it — ``resources`` (files and directories,
recursively), ``components``, ``patches`` (files, with their ``target``),
``patchesStrategicMerge`` and ``patchesJson6902`` — and each source file is parsed with
line numbers. A field is found, in order:

1. in the last patch that targets the object and writes the field (a JSON 6902 operation
   whose ``path`` leads to it, or a strategic-merge patch that contains it): patches are
   applied after the resource, so a patched value comes from the patch;
2. in the resource file that defines the object (matched by kind and name, or by kind alone
   when only one object of that kind exists: a patch may have renamed it) — at the field, or
   at the deepest part of its path that is written there (a missing required field points at
   the mapping that lacks it).

Items of a list are matched by ``name`` when they have one (kustomize merges containers and
the like by name), else by position. What cannot be located (a generated ConfigMap, a remote
resource) gets no line; the caller keeps its old description.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
#: Sources read per kustomization tree: a kustomization that includes itself, or thousands
#: of files, must not make verify walk forever.
MAX_FILES = 500
#: Bigger files are not parsed for line numbers (a manifest is a few KiB).
MAX_FILE_BYTES = 1024 * 1024

Path_ = list[str | int]


@dataclass(frozen=True)
class Origin:
    file: str  # relative to the repository root, POSIX separators
    line: int | None  # 1-based


@dataclass
class _Doc:
    file: Path
    node: Any  # a ruamel CommentedMap / CommentedSeq with line information


@dataclass
class _Patch:
    file: Path
    node: Any
    target: dict[str, Any] = field(default_factory=dict)
    json6902: bool = False


def _load_all(path: Path) -> list[Any]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return []
        y = YAML(typ="rt")
        return [d for d in y.load_all(path.read_text(encoding="utf-8")) if d is not None]
    except (OSError, UnicodeDecodeError, YAMLError, RecursionError, ValueError):
        return []


class Sources:
    """The source files of the kustomization at ``kustomization_dir`` (inside ``root``)."""

    def __init__(self, root: Path, kustomization_dir: Path) -> None:
        self.root = root.resolve()
        self.resources: list[_Doc] = []
        self.patches: list[_Patch] = []
        self._seen: set[Path] = set()
        self._files = 0
        self._walk(kustomization_dir.resolve())

    # -- reading the kustomization ----------------------------------------------------------

    def _inside(self, path: Path) -> bool:
        try:
            path.relative_to(self.root)
        except ValueError:
            return False
        return True

    def _walk(self, directory: Path) -> None:
        if directory in self._seen or not self._inside(directory):
            return
        self._seen.add(directory)
        kfile = next((directory / n for n in KUSTOMIZATION_FILES if (directory / n).is_file()), None)
        if kfile is None:
            return
        docs = _load_all(kfile)
        k = docs[0] if docs and isinstance(docs[0], dict) else {}
        for entry in [*(k.get("resources") or []), *(k.get("components") or [])]:
            if not isinstance(entry, str) or "://" in entry:
                continue
            path = (directory / entry).resolve()
            if path.is_dir():
                self._walk(path)
            elif path.is_file() and self._inside(path) and self._count():
                self.resources += [_Doc(path, d) for d in _load_all(path) if isinstance(d, dict)]
        for entry in k.get("patches") or []:
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                self._add_patch(directory / entry["path"], entry.get("target") or {})
        for entry in k.get("patchesStrategicMerge") or []:
            if isinstance(entry, str):
                self._add_patch(directory / entry, {})
        for entry in k.get("patchesJson6902") or []:
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                self._add_patch(directory / entry["path"], entry.get("target") or {})

    def _count(self) -> bool:
        self._files += 1
        return self._files <= MAX_FILES

    def _add_patch(self, path: Path, target: Any) -> None:
        path = path.resolve()
        if not path.is_file() or not self._inside(path) or not self._count():
            return
        target = dict(target) if isinstance(target, dict) else {}
        for doc in _load_all(path):
            is_ops = isinstance(doc, list) and all(isinstance(op, dict) and "op" in op for op in doc)
            if is_ops or isinstance(doc, dict):
                self.patches.append(_Patch(path, doc, target, json6902=is_ops))

    # -- locating a field -------------------------------------------------------------------

    def _origin(self, file: Path, line0: int | None) -> Origin:
        return Origin(file.relative_to(self.root).as_posix(), None if line0 is None else line0 + 1)

    def _resource(self, obj: dict[str, Any]) -> _Doc | None:
        kind = obj.get("kind")
        name = (obj.get("metadata") or {}).get("name")
        same_kind = [d for d in self.resources if d.node.get("kind") == kind]
        named = [d for d in same_kind if (d.node.get("metadata") or {}).get("name") == name]
        if len(named) == 1:
            return named[0]
        return same_kind[0] if len(same_kind) == 1 else None

    @staticmethod
    def _matches(value: Any, actual: Any) -> bool:
        if value is None:
            return True
        if value == actual:
            return True
        try:  # kustomize's target fields are regular expressions
            return isinstance(value, str) and isinstance(actual, str) and re.fullmatch(value, actual) is not None
        except re.error:
            return False

    def _targets(self, patch: _Patch, obj: dict[str, Any], source_name: str | None) -> bool:
        kind = obj.get("kind")
        name = (obj.get("metadata") or {}).get("name")
        if patch.target:
            t = patch.target
            return (self._matches(t.get("kind"), kind)
                    and (self._matches(t.get("name"), name) or self._matches(t.get("name"), source_name)))
        if patch.json6902 or not isinstance(patch.node, dict):
            return False
        pname = (patch.node.get("metadata") or {}).get("name")
        return patch.node.get("kind") == kind and pname in (name, source_name)

    def locate(self, obj: dict[str, Any], path: Path_) -> Origin | None:
        """The file and line that wrote ``path`` (keys and list indices) of the rendered ``obj``."""
        resource = self._resource(obj)
        source_name = (resource.node.get("metadata") or {}).get("name") if resource else None
        found: Origin | None = None
        for patch in self.patches:  # in kustomize's order: a later patch wins
            if not self._targets(patch, obj, source_name):
                continue
            line = (self._in_json6902(patch.node, obj, path) if patch.json6902
                    else _line_of(patch.node, obj, path, full=True))
            if line is not None:
                found = self._origin(patch.file, line)
        if found is not None:
            return found
        if resource is not None:
            return self._origin(resource.file, _line_of(resource.node, obj, path, full=False))
        return None

    def _in_json6902(self, ops: list[Any], obj: dict[str, Any], path: Path_) -> int | None:
        line = None
        for op in ops:
            pointer = op.get("path")
            if not isinstance(pointer, str) or op.get("op") not in ("add", "replace"):
                continue
            segs = _pointer(pointer)
            if len(segs) > len(path) or [str(s) for s in path[: len(segs)]] != segs:
                continue
            # The operation writes this field or one that contains it: walk into its value.
            rest = path[len(segs):]
            inner = _descend(obj, path[: len(segs)])
            value_line = _line_of_value(op, "value")
            deeper = _line_of(op.get("value"), inner, rest, full=False) if rest else None
            line = deeper if deeper is not None else value_line
        return line


def _pointer(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]


def _descend(obj: Any, path: Path_) -> Any:
    for step in path:
        try:
            obj = obj[step]
        except (KeyError, IndexError, TypeError):
            return None
    return obj


def _line_of_value(node: Any, key: Any) -> int | None:
    lc = getattr(node, "lc", None)
    if lc is None:
        return None
    try:
        return int(lc.key(key)[0])
    except (KeyError, TypeError, AttributeError, IndexError):
        return None


def _line_of(node: Any, rendered: Any, path: Path_, *, full: bool) -> int | None:
    """The line of ``path`` in the source ``node`` (lists matched by item name, else index).

    ``full``: only when the whole path is written here (a patch); else the deepest part of it
    that is (the resource that lacks a field)."""
    line = getattr(getattr(node, "lc", None), "line", None)
    for step in path:
        if isinstance(node, dict):
            if step not in node:
                return None if full else line
            line = _line_of_value(node, step)
            rendered = rendered.get(step) if isinstance(rendered, dict) else None
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int):
            index = _index_in(node, rendered, step)
            if index is None:
                return None if full else line
            lc = getattr(node, "lc", None)  # ruamel's CommentedSeq has line numbers, a plain list none
            if lc is not None:
                try:
                    line = int(lc.item(index)[0])
                except (AttributeError, KeyError, TypeError, IndexError):
                    pass
            rendered = rendered[step] if isinstance(rendered, list) and step < len(rendered) else None
            node = node[index]
        else:
            return None if full else line
    return line


def _index_in(source: list[Any], rendered: Any, index: int) -> int | None:
    """The source item that became ``rendered[index]``: the one with the same name, else the same position."""
    item = rendered[index] if isinstance(rendered, list) and 0 <= index < len(rendered) else None
    name = item.get("name") if isinstance(item, dict) else None
    if name is not None:
        for i, candidate in enumerate(source):
            if isinstance(candidate, dict) and candidate.get("name") == name:
                return i
        return None
    return index if index < len(source) else None
