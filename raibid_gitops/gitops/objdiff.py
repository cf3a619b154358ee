"""Semantic diff of rendered objects: per object, the field paths whose values differ.

A text diff of manifests shows lines; a reviewer of a scaling change wants "ScaledJob
raibid-ci/raibid-agent: spec.maxReplicaCount 8 → 12". Objects are matched by group, kind,
namespace and name; lists of named items (containers, env, volumes) are matched by name, so
a reordering is not reported as a change of every element. Multi-line strings (the settings
ConfigMap carries the whole settings.yaml) are compared line by line.

Used by ``raibid gitops set`` and reusable by ``raibid gitops diff``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

ObjectKey = tuple[str, str, str, str]  # group, kind, namespace, name


class _Missing:
    """Marks the absent side of an added or removed field."""

    def __repr__(self) -> str:
        return "<absent>"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any
    new: Any

    def format(self) -> str:
        return f"{self.path}: {format_value(self.old)} → {format_value(self.new)}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.path}
        if self.old is not MISSING:
            out["old"] = self.old
        if self.new is not MISSING:
            out["new"] = self.new
        return out


@dataclass(frozen=True)
class ObjectChange:
    ref: str  # Kind/namespace/name, as verify names objects
    action: Literal["added", "removed", "changed"]
    fields: tuple[FieldChange, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"object": self.ref, "action": self.action, "fields": [f.to_dict() for f in self.fields]}


def object_key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    return group, str(obj.get("kind", "")), str(meta.get("namespace") or ""), str(meta.get("name") or "")


def object_ref(obj: dict[str, Any]) -> str:
    _, kind, ns, name = object_key(obj)
    return f"{kind}/{ns + '/' if ns else ''}{name}"


def format_value(value: Any) -> str:
    if value is MISSING:
        return "(absent)"
    if isinstance(value, str):
        # Plain for words; JSON-quoted when quoting tells something ("8" vs 8, "", spaces).
        return value if value and value.strip() == value and not _looks_scalar(value) else json.dumps(value)
    return json.dumps(value, sort_keys=True, default=str)


def _looks_scalar(text: str) -> bool:
    if text.lower() in ("true", "false", "null", "yes", "no", "on", "off"):
        return True
    try:
        float(text)
        return True
    except ValueError:
        return False


def _named_list(items: list[Any]) -> dict[str, Any] | None:
    """{name: item} when every item is a mapping with a distinct name; else None."""
    if not items or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return None
    names = [i["name"] for i in items]
    if len(set(names)) != len(names):
        return None
    return {i["name"]: i for i in items}


def _walk(old: Any, new: Any, path: str) -> Iterator[FieldChange]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{key}" if path else str(key)
            yield from _walk(old.get(key, MISSING), new.get(key, MISSING), sub)
        return
    if isinstance(old, list) and isinstance(new, list):
        old_named, new_named = _named_list(old), _named_list(new)
        if old_named is not None and new_named is not None:
            for name in list(old_named) + [n for n in new_named if n not in old_named]:
                yield from _walk(old_named.get(name, MISSING), new_named.get(name, MISSING), f"{path}[name={name}]")
            return
        if len(old) == len(new):
            for i, (a, b) in enumerate(zip(old, new, strict=True)):
                yield from _walk(a, b, f"{path}[{i}]")
            return
    if isinstance(old, str) and isinstance(new, str) and ("\n" in old or "\n" in new):
        yield from _text_lines(old, new, path)
        return
    if old != new or type(old) is not type(new):
        yield FieldChange(path, old, new)


def _text_lines(old: str, new: str, path: str) -> Iterator[FieldChange]:
    """Changed lines of a multi-line string, each as ``path@line N`` (N in the new text)."""
    import difflib  # only for a changed multi-line value: not on every command's start

    a, b = old.splitlines(), new.splitlines()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        olds, news = a[i1:i2], b[j1:j2]
        for k in range(max(len(olds), len(news))):
            line = j1 + k + 1
            yield FieldChange(f"{path}@line {line}", olds[k].strip() if k < len(olds) else MISSING,
                              news[k].strip() if k < len(news) else MISSING)


def diff_objects(old: Iterable[dict[str, Any]], new: Iterable[dict[str, Any]]) -> list[ObjectChange]:
    """Changes from ``old`` to ``new``, in the order objects appear (removed ones last)."""
    old_by = {object_key(o): o for o in old}
    new_list = list(new)
    out: list[ObjectChange] = []
    seen: set[ObjectKey] = set()
    for obj in new_list:
        key = object_key(obj)
        seen.add(key)
        before = old_by.get(key)
        if before is None:
            out.append(ObjectChange(object_ref(obj), "added"))
            continue
        fields = tuple(_walk(before, obj, ""))
        if fields:
            out.append(ObjectChange(object_ref(obj), "changed", fields))
    for key, obj in old_by.items():
        if key not in seen:
            out.append(ObjectChange(object_ref(obj), "removed"))
    return out


def format_text(changes: list[ObjectChange]) -> str:
    """One block per object, one line per field: what a person reads in a terminal or a PR."""
    if not changes:
        return "no change to the rendered objects\n"
    lines: list[str] = []
    for ch in changes:
        if ch.action != "changed":
            lines.append(f"{ch.ref}: {ch.action}")
            continue
        lines.append(f"{ch.ref}:")
        lines.extend(f"  {f.format()}" for f in ch.fields)
    return "\n".join(lines) + "\n"


def to_data(changes: list[ObjectChange]) -> list[dict[str, Any]]:
    return [c.to_dict() for c in changes]
