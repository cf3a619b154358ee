"""Edit settings.yaml: only the lines of changed values differ.

A scalar value that is written in the file is changed in place, in the text: the parser's
events give the exact span of the value (an ``&anchor`` included, or a ``*alias``), which is
replaced by the new value quoted the way the old one was. Everything else (comments, anchors,
aliases, blank lines, quoting) stays byte for byte; a round-trip dump cannot promise that once
a file uses anchors (it moves comments onto aliases and drops unused anchors).

A key not yet in the file, or a list value, goes through a ruamel round-trip dump, which
keeps an anchor-free file byte-identical except for the change; for a file with anchors that
case is refused rather than reformatted.

Whatever the path, the edited text is loaded again and must hold exactly the intended
settings: an edit of an anchored value that aliases elsewhere would also change those, and is
refused, naming them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raibid_gitops import yamlio
from raibid_gitops.errors import SettingsError

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.settings import Settings


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    anchor: str | None
    alias: bool
    style: str | None
    text: str  # the value as written, without the anchor


def _to_node(value: Any, like: Any) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, dict):
        m = CommentedMap()
        for k, v in value.items():
            m[k] = _to_node(v, None)
        return m
    if isinstance(value, (list, tuple)):
        s = CommentedSeq()
        for v in value:
            s.append(_to_node(v, None))
        return s
    return yamlio.scalar_for(value, like)


def _ruamel_events(text: str) -> Iterable[Any]:
    """The parse events of ``text``: libyaml's where they are ruamel's (yaml12.events; the same
    names and fields, tested on the template and mutations of it), else ruamel's."""
    from raibid_gitops import yaml12

    fast = yaml12.events(text)
    if fast is not None:
        return fast
    from ruamel.yaml import YAML

    return YAML(typ="rt").parse(text)


def _scan(text: str, parse: Callable[[str], Iterable[Any]] | None = None) -> tuple[dict[str, _Span], bool]:
    """Spans of the scalar (or alias) values of every mapping key path, and whether the
    document uses anchors or aliases at all. ``parse``: the YAML events of the text (ruamel's
    by default; libyaml's, which carry the same fields, for `set`'s head start)."""
    spans: dict[str, _Span] = {}
    uses_anchors = False
    # A stack of open collections: [kind, path, pending key (mappings), next index (sequences)].
    stack: list[list[Any]] = []

    def place() -> str | None:
        """The dotted path of the node the next event is, or None for a mapping key."""
        if not stack:
            return ""
        top = stack[-1]
        if top[0] == "map":
            if top[2] is None:
                return None
            key, top[2] = top[2], None
            return f"{top[1]}.{key}" if top[1] else key
        index = top[3]
        top[3] += 1
        return f"{top[1]}.{index}" if top[1] else str(index)

    for ev in (parse or _ruamel_events)(text):
        kind = type(ev).__name__  # the same event names in ruamel and PyYAML
        if kind in ("MappingStartEvent", "SequenceStartEvent"):
            uses_anchors = uses_anchors or bool(ev.anchor)
            path = place()
            if path is None:  # a collection as a mapping key: nothing we edit
                path = "\0complex-key"
            stack.append(["map" if kind == "MappingStartEvent" else "seq", path, None, 0])
        elif kind in ("MappingEndEvent", "SequenceEndEvent"):
            stack.pop()
        elif kind in ("ScalarEvent", "AliasEvent"):
            is_alias = kind == "AliasEvent"
            uses_anchors = uses_anchors or bool(ev.anchor)
            path = place()
            if path is None:
                stack[-1][2] = "\0alias-key" if is_alias else str(ev.value)
                continue
            start, end = ev.start_mark.index, ev.end_mark.index
            written = text[start:end]
            if ev.anchor and not is_alias:
                written = written.split(None, 1)[1] if len(written.split(None, 1)) == 2 else ""
            spans[path] = _Span(start, end, None if is_alias else ev.anchor, is_alias,
                                None if is_alias else (ev.style or None), written)  # libyaml: "" for plain
    return spans, uses_anchors


def _splice(text: str, span: _Span, value: Any) -> str:
    from raibid_gitops.gitops.setters import render_value

    # The alias's target text decides nothing about quoting: render plainly-quoted as needed.
    new = render_value(value, "" if span.alias else span.text)
    if span.anchor:
        new = f"&{span.anchor} {new}"
    return text[:span.start] + new + text[span.end:]


def update_text(text: str, changes: dict[str, Any], file: str = "settings.yaml",
                expected: Settings | None = None, *, parse: Callable[[str], Iterable[Any]] | None = None) -> str:
    """Return settings.yaml text with the dotted keys set to the given (validated) values.

    ``expected``: the settings the result must hold; when given, an edit that would change
    anything else (through an anchor) is refused with the settings it would drag along."""
    try:
        spans, uses_anchors = _scan(text, parse)
    except Exception:  # malformed text: load_rt below reports it with its line
        yamlio.load_rt(text, file)
        raise
    out = text
    rest: dict[str, Any] = {}
    # Right to left, so the spans of earlier values stay valid.
    in_place = []
    for key, value in changes.items():
        span = spans.get(key)
        if (span is not None and not isinstance(value, (list, tuple, dict))
                and span.style not in ("|", ">") and "\n" not in span.text):
            in_place.append((span, value))
        else:
            rest[key] = value
    for span, value in sorted(in_place, key=lambda sv: sv[0].start, reverse=True):
        out = _splice(out, span, value)
    if rest:
        if uses_anchors:
            raise SettingsError(
                f"{file} uses YAML anchors, so set will not rewrite it to add {', '.join(rest)} "
                "(a rewrite would move its comments and anchors)",
                hint=f"add {', '.join(rest)} to {file} by hand (or write out the anchored values), then set again",
            )
        out = _dump_with(out, rest, file)
    if expected is not None:
        from raibid_gitops.settings import load_text

        _check_result(out, file, expected, changes, load_text)
    return out


def _dump_with(text: str, changes: dict[str, Any], file: str) -> str:
    from ruamel.yaml.comments import CommentedMap

    doc = yamlio.load_rt(text, file)
    if doc is None:
        doc = CommentedMap()
    for key, value in changes.items():
        node = doc
        parts = key.split(".")
        for part in parts[:-1]:
            if part not in node or node[part] is None:
                node[part] = CommentedMap()
            node = node[part]
            if not isinstance(node, CommentedMap):
                raise SettingsError(f"{file}: {key}: {part} is not a mapping")
        leaf = parts[-1]
        old = node.get(leaf)
        if isinstance(value, (list, tuple, dict)):
            if yamlio.to_plain(old) == value:
                continue
        elif old == value and type(old) is type(value) or (
            not isinstance(value, bool) and str(old) == str(value) and isinstance(old, str) == isinstance(value, str)
        ):
            continue
        node[leaf] = _to_node(value, old)
    return yamlio.dump_rt(doc)


def _check_result(out: str, file: str, expected: Settings, changes: dict[str, Any], load_text: Any) -> None:
    got = load_text(out, file)
    if got == expected:
        return
    want, have = expected.data(), got.data()
    dragged = sorted(k for k in _leaves(want) if _at(want, k) != _at(have, k))
    raise SettingsError(
        f"{file}: setting {', '.join(changes)} would also change {', '.join(dragged) or 'other settings'}, "
        "which share its value through a YAML anchor (&name / *name); nothing was changed",
        hint="write the value out where it is aliased (replace *name by the value), then set again",
    )


def _leaves(data: Any, prefix: str = "") -> list[str]:
    if isinstance(data, dict):
        return [k for key, v in data.items() for k in _leaves(v, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def _at(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data
