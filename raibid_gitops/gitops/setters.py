"""Marked fields: manifest values that must equal a setting.

KEDA and Flux fields cannot read a ConfigMap, so values such as ``maxReplicaCount`` are
written in the manifests too, each followed by a marker comment naming its setting (the idea
of kpt setters and of Flux image automation's ``# {"$imagepolicy": ...}``)::

    value: 8 # {"$raibid": "agents.maxReplicas"}
    url: http://... # {"$raibid": "{gitea.url}/{gitea.owner}/{gitea.repo}.git"}

A marker names a setting, or a template of settings in braces. Setting and checking work on
the marked *line* only, so every other byte of the file stays as the author wrote it, and
the value keeps its quoting: ``"1"`` stays a string (KEDA metadata), ``8`` stays a number.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.settings import Settings

MARKER = re.compile(r'#\s*\{\s*"\$raibid"\s*:\s*"(?P<expr>[^"]+)"\s*\}\s*\Z')
_LINE = re.compile(
    r'^(?P<prefix>\s*(?:-\s+)?(?P<key>[^\s#:"\'][^:#]*?):[ \t]+)(?P<value>\S.*?)(?P<gap>[ \t]+)'
    r'(?P<marker>#\s*\{\s*"\$raibid"\s*:\s*"(?P<expr>[^"]+)"\s*\})\s*\Z'
)
_TEMPLATE_FIELD = re.compile(r"\{([A-Za-z0-9_.]+)\}")

#: Files of the config repository that may carry markers.
MARKED_GLOBS = ("overlays/*/*.yaml", "clusters/*/*.yaml", "base/*.yaml")


class _Paths:
    """A file's line -> field path map, made on first use: verify only names a field's path
    when it reports a problem there, so a clean repository never parses its marked files."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._paths: dict[int, str] | None = None

    def get(self, line: int, default: str) -> str:
        if self._paths is None:
            self._paths = _field_paths(self.text)
        return self._paths.get(line, default)


@dataclass(frozen=True)
class MarkedField:
    file: str  # relative to the repository root
    line: int  # 1-based
    key: str  # the YAML key on that line
    expr: str  # the setting or template named by the marker
    text: str  # the value as written
    paths: _Paths = dataclass_field(repr=False, compare=False)

    @property
    def field(self) -> str:
        """A readable location: the JSON-patch path, or the dotted YAML path."""
        return self.paths.get(self.line, self.key)

    def settings_named(self) -> list[str]:
        return _TEMPLATE_FIELD.findall(self.expr) if "{" in self.expr else [self.expr]


def evaluate(expr: str, settings: Settings) -> Any:
    """The value a marker's expression stands for."""
    if "{" in expr:
        return _TEMPLATE_FIELD.sub(lambda m: str(settings.get(m.group(1))), expr)
    return settings.get(expr)


def _parse_scalar(text: str) -> Any:
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    return y.load(text)


def _double_quoted(text: str) -> str:
    # JSON's string escapes are YAML's double-quoted escapes: a newline or a control
    # character becomes visible (\n, \u0007) instead of being folded away by a reader.
    return json.dumps(text, ensure_ascii=False)


def render_value(value: Any, old_text: str) -> str:
    """The text of ``value`` for a marked line whose current value text is ``old_text``:
    quoted the same way, and quoted whenever a reader would misread it plain."""
    from raibid_gitops.yamlio import needs_quotes

    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if old_text[:1] == "'" and text.isprintable():
        return "'" + text.replace("'", "''") + "'"
    if old_text[:1] == '"' or (not isinstance(value, (bool, int, float)) and needs_quotes(text)):
        return _double_quoted(text)
    return text


class _Unsure(Exception):
    """The fast field-path walk cannot promise the round-trip walk's answer."""


def _field_paths_fast(text: str) -> dict[int, str] | None:
    """:func:`_field_paths` from libyaml's nodes (lines from their marks), or None where it
    could differ from the round-trip walk: any text :mod:`raibid_gitops.yaml12` hands to its
    reference loader, keys that are not strings, a JSON patch ``path`` that is not a string,
    deep nesting (the round-trip load refuses past MAX_MANIFEST_DEPTH)."""
    from raibid_gitops import yaml12

    docs = yaml12.documents(text)
    if docs is None:
        return None
    out: dict[int, str] = {}

    def walk(node: Any, data: Any, path: str, depth: int) -> None:
        if depth > 50:
            raise _Unsure
        if isinstance(data, dict):
            if not all(isinstance(k, str) for k in data):
                raise _Unsure
            patch_path = data.get("path") if "op" in data and "path" in data else None
            if patch_path is not None and not isinstance(patch_path, str):
                raise _Unsure
            for (key_node, value_node), k in zip(node.value, data, strict=True):
                line = key_node.start_mark.line + 1
                sub = f"{path}.{k}" if path else k
                if line not in out:
                    out[line] = patch_path if patch_path and k == "value" else sub
                walk(value_node, data[k], sub, depth + 1)
        elif isinstance(data, list):
            for i, (item_node, item) in enumerate(zip(node.value, data, strict=True)):
                walk(item_node, item, f"{path}[{i}]", depth + 1)

    try:
        for node, data in docs:
            if data is not None:
                walk(node, data, "", 1)
    except _Unsure:
        return None
    return out


def _field_paths(text: str) -> dict[int, str]:
    """Line number -> readable field path of the value on that line."""
    fast = _field_paths_fast(text)
    return fast if fast is not None else _field_paths_rt(text)


def _field_paths_rt(text: str) -> dict[int, str]:
    """:func:`_field_paths` by a round-trip load (the reference for the fast walk)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    from raibid_gitops.yamlio import load_all_rt

    out: dict[int, str] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, CommentedMap):
            patch_path = node.get("path") if "op" in node and "path" in node else None
            for k in node:
                try:
                    line = node.lc.key(k)[0] + 1
                except (KeyError, TypeError):
                    line = None
                sub = f"{path}.{k}" if path else str(k)
                if line is not None and line not in out:
                    out[line] = f"{patch_path}" if patch_path and k == "value" else sub
                walk(node[k], sub)
        elif isinstance(node, CommentedSeq):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    try:
        for doc in load_all_rt(text, "<marked>"):
            walk(doc, "")
    except Exception:  # noqa: BLE001 - a malformed file is reported by verify's own parse
        pass
    return out


def scan_text(rel: str, text: str) -> Iterator[MarkedField]:
    paths = _Paths(text)
    for i, line in enumerate(text.splitlines(), start=1):
        if '"$raibid"' not in line:
            continue
        m = _LINE.match(line)
        if not m:
            continue
        yield MarkedField(file=rel, line=i, key=m.group("key").strip(), expr=m.group("expr"), text=m.group("value"),
                          paths=paths)


def malformed_markers(rel: str, text: str) -> list[tuple[int, str]]:
    """Lines that carry a marker the setter cannot handle (e.g. a marker on a block value)."""
    bad = []
    for i, line in enumerate(text.splitlines(), start=1):
        if MARKER.search(line) and not _LINE.match(line):
            bad.append((i, line.strip()))
    return bad


def marked_files(root: Path) -> list[Path]:
    files: set[Path] = set()
    for pattern in MARKED_GLOBS:
        files.update(p for p in root.glob(pattern) if p.is_file())
    return sorted(files)


def scan(root: Path) -> list[MarkedField]:
    out: list[MarkedField] = []
    for path in marked_files(root):
        out.extend(scan_text(path.relative_to(root).as_posix(), path.read_text(encoding="utf-8")))
    return out


def apply_text(text: str, settings: Settings) -> str:
    """Return ``text`` with every marked value set from ``settings``; other bytes untouched."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if '"$raibid"' not in line:
            continue
        body = line.rstrip("\r\n")
        ending = line[len(body):]
        m = _LINE.match(body)
        if not m:
            continue
        new_value = render_value(evaluate(m.group("expr"), settings), m.group("value"))
        if new_value != m.group("value"):
            lines[i] = m.group("prefix") + new_value + m.group("gap") + m.group("marker") + ending
    return "".join(lines)


def expected_text(field: MarkedField, settings: Settings) -> str:
    return render_value(evaluate(field.expr, settings), field.text)
