"""YAML 1.2 safe loading of rendered manifests, fast where that provably changes nothing.

``kustomize build`` prints a few hundred lines per object; ruamel's pure-Python safe loader
(our YAML 1.2 reference, :func:`load_all_reference`) reads them at about 0.5 MB/s, which made
parsing a third of `raibid gitops set` (issue 14). libyaml (PyYAML's C parser) composes the
same nodes some ten times faster, but PyYAML *resolves* plain scalars by YAML 1.1 rules
(``yes``, ``on``, ``0777``, ``1:30`` ...). So only libyaml's parser is used here: each plain
scalar is resolved with ruamel's own YAML 1.2 table (copied, and tested equal to ruamel's), and
constructed only where the result is certain to be the reference's:

- ``null``/``~``/empty, ``true``/``false`` (the 1.2 spellings), plain decimal integers, and
  strings (every quoted or block scalar, and plain ones no rule matches);
- anything else (floats, timestamps, ``<<`` merge keys, other integer forms, explicit tags,
  aliases, duplicate or complex keys, ``%`` directives, tabs, line breaks YAML 1.1 and 1.2
  disagree on, characters ruamel refuses, a libyaml error) makes the whole text fall back to
  the reference loader, which then gives its own result or its own error.

tests/test_yaml12.py checks the equivalence on every rendered object and on each fallback.
"""

from __future__ import annotations

import re
from typing import Any

#: Characters that make the whole text go to the reference loader: tabs (YAML 1.1 and 1.2
#: place them differently), line breaks only YAML 1.1 knows (NEL, LS, PS), CR, and a BOM.
_FALLBACK_CHARS = re.compile("[\t\r\x85\u2028\u2029\ufeff]")
_DIRECTIVE = re.compile(r"^%", re.M)
_DECIMAL = re.compile(r"[-+]?[0-9]+")
#: libyaml composes nested collections by C recursion, with no depth check of its own: deep
#: nesting (far beyond anything kustomize prints) goes to the reference loader, which bounds it.
_DEEP_INDENT = re.compile(r"^ {256}", re.M)
_MAX_FLOW_OPENERS = 4096
#: Longer integers go to the reference loader (Python's int() refuses over 4300 digits, and
#: the reference's error is the one to report).
_MAX_INT_DIGITS = 1000

_STR, _SEQ, _MAP = "raibid:str", "raibid:seq", "raibid:map"
_PLAIN = "raibid:plain:"
#: The tag :func:`documents` gives a plain scalar that reads as a string.
PLAIN_STRING = _PLAIN
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"


class _Fallback(Exception):
    """The fast path cannot promise the reference's result for this text."""


_table: dict[str | None, list[tuple[str, Any]]] | None = None
_loader: Any = None


#: ruamel's YAML 1.2 implicit resolvers (tag, pattern, flags, first characters), in its order,
#: copied, because importing ruamel costs about 10 ms a process, and held equal to ruamel's own
#: table by tests/test_yaml12.py (a ruamel upgrade that changes it fails there, not here).
RESOLVERS_1_2: list[tuple[str, str, int, list[str]]] = [
    ('tag:yaml.org,2002:bool',
     '^(?:true|True|TRUE|false|False|FALSE)$',
     re.X, ['t', 'T', 'f', 'F']),
    ('tag:yaml.org,2002:float',
     '^(?:\n'
     '         [-+]?(?:[0-9][0-9_]*)\\.[0-9_]*(?:[eE][-+]?[0-9]+)?\n'
     '        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)\n'
     '        |[-+]?\\.[0-9_]+(?:[eE][-+][0-9]+)?\n'
     '        |[-+]?\\.(?:inf|Inf|INF)\n'
     '        |\\.(?:nan|NaN|NAN))$',
     re.X, ['-', '+', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '.']),
    ('tag:yaml.org,2002:int',
     '^(?:[-+]?0b[0-1_]+\n'
     '        |[-+]?0o?[0-7_]+\n'
     '        |[-+]?[0-9_]+\n'
     '        |[-+]?0x[0-9a-fA-F_]+)$',
     re.X, ['-', '+', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']),
    ('tag:yaml.org,2002:merge',
     '^(?:<<)$',
     0, ['<']),
    ('tag:yaml.org,2002:null',
     '^(?: ~\n'
     '        |null|Null|NULL\n'
     '        | )$',
     re.X, ['~', 'n', 'N', '']),
    ('tag:yaml.org,2002:timestamp',
     '^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]\n'
     '        |[0-9][0-9][0-9][0-9] -[0-9][0-9]? -[0-9][0-9]?\n'
     '        (?:[Tt]|[ \\t]+)[0-9][0-9]?\n'
     '        :[0-9][0-9] :[0-9][0-9] (?:\\.[0-9]*)?\n'
     '        (?:[ \\t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$',
     re.X, ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']),
    ('tag:yaml.org,2002:value',
     '^(?:=)$',
     0, ['=']),
    ('tag:yaml.org,2002:yaml',
     '^(?:!|&|\\*)$',
     0, ['!', '&', '*']),
]


def _resolvers() -> dict[str | None, list[tuple[str, Any]]]:
    """:data:`RESOLVERS_1_2` by first character, in ruamel's order (as its VersionedResolver
    builds them)."""
    global _table
    if _table is None:
        table: dict[str | None, list[tuple[str, Any]]] = {}
        for tag, pattern, flags, first in RESOLVERS_1_2:
            regexp = re.compile(pattern, flags)
            chars: list[str | None] = list(first) if first else [None]
            for ch in chars:
                table.setdefault(ch, []).append((tag, regexp))
        _table = table
    return _table


def _resolve_plain(value: str) -> str | None:
    """The tag ruamel's YAML 1.2 resolver gives a plain scalar (None: a string)."""
    table = _resolvers()
    for tag, regexp in table.get(value[0] if value else "", []) + table.get(None, []):
        if regexp.match(value):
            return str(tag)
    return None


def _make_loader() -> Any:
    """A libyaml parser whose resolver marks nodes for :func:`_construct` (or None without libyaml)."""
    global _loader
    if _loader is None:
        try:
            import yaml
            from yaml._yaml import CParser  # libyaml; missing when PyYAML was built without it
        except ImportError:
            _loader = False
            return None

        class Loader(CParser):
            # No path resolvers (ruamel's safe loader has none either).
            def descend_resolver(self, current_node: Any, current_index: Any) -> None:
                pass

            def ascend_resolver(self) -> None:
                pass

            def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
                if kind is yaml.ScalarNode:
                    if implicit[0]:
                        return _PLAIN + (_resolve_plain(value) or "")
                    return _STR
                return _SEQ if kind is yaml.SequenceNode else _MAP

        _loader = Loader
    return _loader or None


def _construct(node: Any, seen: set[int]) -> Any:
    key = id(node)
    if key in seen:
        raise _Fallback("alias")  # a shared node: the reference's sharing is what counts
    seen.add(key)
    tag = node.tag
    if tag == _STR:
        return node.value
    if tag.startswith(_PLAIN):
        resolved, value = tag[len(_PLAIN):], node.value
        if not resolved:
            return value
        if resolved == _NULL:
            return None
        if resolved == _BOOL:
            return value.lower() == "true"
        if resolved == _INT and _DECIMAL.fullmatch(value) and len(value) <= _MAX_INT_DIGITS:
            return int(value)
        raise _Fallback(resolved)
    if tag == _SEQ:
        return [_construct(item, seen) for item in node.value]
    if tag == _MAP:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag != _STR and not key_node.tag.startswith(_PLAIN):
                raise _Fallback("complex or tagged key")
            k = _construct(key_node, seen)
            if k in out:
                raise _Fallback("duplicate key")
            out[k] = _construct(value_node, seen)
        return out
    raise _Fallback(f"explicit tag {tag}")


def load_all_reference(text: str) -> list[Any]:
    """Every document of ``text`` with ruamel's pure YAML 1.2 safe loader (the reference)."""
    from ruamel.yaml import YAML

    return list(YAML(typ="safe", pure=True).load_all(text))


def plain_text(text: str) -> bool:
    """Whether ``text`` is free of what makes libyaml and ruamel's YAML 1.2 reading part ways
    (see the module doc): then their parsers give the same events. Only with PyYAML loaded
    (its reader's NON_PRINTABLE is ruamel's, tests/test_yaml12.py checks: one import fewer)."""
    from yaml.reader import Reader

    return not (_FALLBACK_CHARS.search(text) or _DIRECTIVE.search(text) or _DEEP_INDENT.search(text)
                or text.count("[") + text.count("{") > _MAX_FLOW_OPENERS or Reader.NON_PRINTABLE.search(text))


def events(text: str) -> list[Any] | None:
    """libyaml's parse events of ``text`` (same names and fields as ruamel's), or None where they
    could differ from ruamel's or libyaml is missing or refuses the text."""
    if _make_loader() is None or not plain_text(text):
        return None
    import yaml

    try:
        evs = list(yaml.parse(text, Loader=yaml.CSafeLoader))
    except Exception:  # noqa: BLE001 - ruamel then parses it and reports in its own words
        return None
    # An empty value (``key:`` and nothing) has no text to place: the two parsers put its mark
    # at different offsets.
    if any(type(ev).__name__ == "ScalarEvent" and ev.value == "" and not ev.style for ev in evs):
        return None
    return evs


def documents(text: str) -> list[tuple[Any, Any]] | None:
    """Each document of ``text`` as (libyaml node, data): the node keeps its marks (lines),
    the data is what :func:`load_all_reference` gives. None when the fast path cannot promise
    that data (then use the reference loader)."""
    loader_cls = _make_loader()
    if loader_cls is None or not plain_text(text):
        return None
    loader = loader_cls(text)
    try:
        docs = []
        while loader.check_node():
            node = loader.get_node()
            docs.append((node, _construct(node, set())))
        return docs
    except Exception:  # noqa: BLE001 - _Fallback, a libyaml error, anything: the reference decides
        return None
    finally:
        loader.dispose()


def _fast(text: str) -> list[Any] | None:
    docs = documents(text)
    return None if docs is None else [data for _node, data in docs]


def load_all(text: str) -> list[Any]:
    """Every document of ``text``, exactly as :func:`load_all_reference` gives them (the same
    data, or the same exception), fast when the text allows it."""
    docs = _fast(text)
    return docs if docs is not None else load_all_reference(text)
