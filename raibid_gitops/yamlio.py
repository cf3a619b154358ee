"""YAML the way the config repository needs it: round-trip, comment-keeping, YAML-1.1-safe.

One ruamel configuration for the whole repository (mapping indent 2, sequences indented
4 with the dash at 2, no line wrapping), so an untouched file loads and dumps byte-identical.
"""

from __future__ import annotations

import io
import re
from typing import Any

from raibid_gitops.errors import SettingsError

#: Plain scalars that YAML 1.1 (and so much of the Kubernetes tool chain) reads as booleans
#: or null, while ruamel (YAML 1.2) reads them as strings.
YAML11_TRAPS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"})
_YAML11_BOOL_ONLY = frozenset({"y", "n", "yes", "no", "on", "off"})


def rt_yaml():
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def _problem_location(exc: Exception) -> tuple[int | None, str]:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return ((mark.line + 1) if mark is not None else None, problem)


def load_rt(text: str, file: str) -> Any:
    """Round-trip load one document; a malformed file raises SettingsError naming the line."""
    from ruamel.yaml.error import YAMLError

    try:
        return rt_yaml().load(text)
    except YAMLError as exc:
        line, problem = _problem_location(exc)
        where = f"{file}:{line}" if line else file
        raise SettingsError(f"{where}: malformed YAML: {problem}", hint="check the indentation and quoting") from None


def load_all_rt(text: str, file: str) -> list[Any]:
    from ruamel.yaml.error import YAMLError

    try:
        return [d for d in rt_yaml().load_all(text) if d is not None]
    except YAMLError as exc:
        line, problem = _problem_location(exc)
        where = f"{file}:{line}" if line else file
        raise SettingsError(f"{where}: malformed YAML: {problem}") from None


def dump_rt(doc: Any) -> str:
    buf = io.StringIO()
    rt_yaml().dump(doc, buf)
    return buf.getvalue()


def to_plain(node: Any) -> Any:
    """Round-trip nodes to plain dict/list/str/int, for validation."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, (CommentedMap, dict)):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, (CommentedSeq, list)):
        return [to_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def key_lines(doc: Any, prefix: str = "") -> dict[str, int]:
    """Map dotted key -> 1-based line number of that key in the file."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    out: dict[str, int] = {}
    if isinstance(doc, CommentedMap):
        for k in doc:
            key = f"{prefix}{k}"
            try:
                out[key] = doc.lc.key(k)[0] + 1
            except (KeyError, TypeError, AttributeError):
                pass
            out.update(key_lines(doc[k], key + "."))
    elif isinstance(doc, CommentedSeq):
        for i, v in enumerate(doc):
            key = f"{prefix}{i}"
            try:
                out[key] = doc.lc.item(i)[0] + 1
            except (KeyError, TypeError, AttributeError):
                pass
            out.update(key_lines(v, key + "."))
    return out


def yaml11_traps(doc: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Unquoted scalars that YAML 1.1 would read as booleans: (dotted key, text)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.scalarstring import ScalarString

    found: list[tuple[str, str]] = []
    items = doc.items() if isinstance(doc, CommentedMap) else enumerate(doc) if isinstance(doc, CommentedSeq) else ()
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, (CommentedMap, CommentedSeq)):
            found.extend(yaml11_traps(v, key + "."))
        elif isinstance(v, str) and not isinstance(v, ScalarString) and v.lower() in _YAML11_BOOL_ONLY:
            found.append((key, str(v)))
    return found


def load_settings_doc(text: str, file: str) -> Any:
    """Load settings.yaml for validation, refusing YAML-1.1 traps with a located message."""
    from raibid_gitops.problems import Problem

    doc = load_rt(text, file)
    traps = yaml11_traps(doc)
    if traps:
        lines = key_lines(doc)
        problems = [
            Problem(file=file, field=k, line=lines.get(k),
                    message=f"unquoted {v!r} is a boolean to YAML 1.1 readers (kubectl, KEDA) but a string here; "
                            f"write true/false, or quote it (\"{v}\") if you mean the word")
            for k, v in traps
        ]
        raise SettingsError(f"{file} is ambiguous:\n" + "\n".join("  " + p.format() for p in problems),
                            problems=problems)
    return doc


_NUMERIC = re.compile(r"^(?:[-+]?[0-9][0-9_.:eE+-]*|0x[0-9a-fA-F]+|0o[0-7]+|\.inf|\.nan)$")


def needs_quotes(text: str) -> bool:
    """Whether plain ``text`` would be misread: by a YAML-1.1 reader (``on``, ``yes``, ``1e3``,
    sexagesimal ``1:30``) or by any YAML reader (a leading indicator, ``: ``, `` #``, padding)."""
    return (
        text == "" or text.lower() in YAML11_TRAPS or _NUMERIC.match(text) is not None
        or text != text.strip() or text[:1] in "!&*{}[],#|>@`\"'%?:-" or ": " in text or " #" in text
    )


def scalar_for(value: Any, like: Any = None) -> Any:
    """A ruamel scalar for ``value``, quoted like ``like`` was, and always quoted when a
    reader would misread the plain text (see :func:`needs_quotes`)."""
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString

    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        if isinstance(like, (DoubleQuotedScalarString, SingleQuotedScalarString)):
            text = "true" if value is True else "false" if value is False else str(value)
            return type(like)(text)
        return value
    text = str(value)
    if isinstance(like, SingleQuotedScalarString):
        return SingleQuotedScalarString(text)
    if isinstance(like, DoubleQuotedScalarString) or needs_quotes(text):
        return DoubleQuotedScalarString(text)
    return text
