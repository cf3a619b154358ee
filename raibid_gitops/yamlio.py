"""YAML the way the config repository needs it: round-trip, comment-keeping, YAML-1.1-safe.

One ruamel configuration for the whole repository (mapping indent 2, sequences indented
4 with the dash at 2, no line wrapping), so an untouched file loads and dumps byte-identical.
"""

from __future__ import annotations

import io
import re
from typing import Any

from raibid_gitops.errors import SettingsError

#: settings.yaml is a few KiB. 256 KiB leaves room for long comments and pipelines, keeps a
#: parse within a second or two on the node (ruamel reads ~200 KiB/s of dense YAML there), and
#: the ConfigMap Flux makes of it far below Kubernetes' 1 MiB.
MAX_SETTINGS_BYTES = 256 * 1024
#: Nodes of a settings document once aliases are expanded. The defaults are ~60 nodes and a
#: long pipeline a few hundred; anchors and aliases cost nothing to parse but every walk over
#: the data (validation, hashing, the ConfigMap consumers) pays for the expanded tree, which
#: nested aliases make exponential ("billion laughs": 3 KB -> 400 MB).
MAX_SETTINGS_NODES = 10_000
#: Nesting of a settings document (agents.defaultPipeline[0].name is 4 deep).
MAX_SETTINGS_DEPTH = 32
#: The same bounds for manifests we parse (marked patches, kustomize's output): a whole
#: rendered overlay is a few thousand nodes.
MAX_MANIFEST_NODES = 200_000
MAX_MANIFEST_DEPTH = 100
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


def _malformed(file: str, line: int | None, problem: str, hint: str | None = None) -> SettingsError:
    from raibid_gitops.problems import Problem

    where = f"{file}:{line}" if line else file
    return SettingsError(f"{where}: malformed YAML: {problem}", hint=hint,
                         problems=[Problem(file=file, line=line, field="(yaml)", message=f"malformed YAML: {problem}")])


def _unreadable(file: str, text: str, exc: BaseException) -> SettingsError:
    """A failure of the YAML library that is not a YAMLError: too deep, or a number too long."""
    if isinstance(exc, RecursionError):
        return _malformed(file, None, "nested too deeply", hint="settings are a few levels deep; remove the nesting")
    long_number = re.search(r"[0-9]{1000,}", text)
    if long_number:
        line = text.count("\n", 0, long_number.start()) + 1
        return _malformed(file, line, f"a number of {len(long_number.group(0))} digits",
                          hint="numbers in settings have at most a few digits")
    return _malformed(file, None, type(exc).__name__)


def check_bounds(doc: Any, file: str, *, max_nodes: int = MAX_SETTINGS_NODES,
                 max_depth: int = MAX_SETTINGS_DEPTH) -> None:
    """Refuse a document whose tree, with every alias expanded, has more than ``max_nodes``
    nodes or is nested deeper than ``max_depth``.

    Counted on the parsed data, where an alias is a shared reference: each shared container
    is measured once (memoised by identity), so checking costs as little as parsing did, and
    a document that would expand to millions of nodes is refused before anything walks it.
    """
    memo: dict[int, tuple[int, int]] = {}  # id(container) -> (expanded nodes, height)

    def measure(node: Any, depth: int) -> tuple[int, int]:
        if isinstance(node, dict):
            children: Any = [v for kv in node.items() for v in kv]
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            return 1, 0
        key = id(node)
        if key not in memo:
            if depth > max_depth:
                raise _too_big(file, f"it is nested deeper than {max_depth} levels")
            size, height = 1, 0
            for child in children:
                n, h = measure(child, depth + 1)
                size, height = size + n, max(height, h + 1)
                if size > max_nodes:
                    raise _too_big(file, f"with its aliases expanded it has more than {max_nodes} values")
            memo[key] = (size, height)
        size, height = memo[key]
        if depth + height > max_depth:
            raise _too_big(file, f"it is nested deeper than {max_depth} levels")
        return size, height

    measure(doc, 0)


def _too_big(file: str, why: str) -> SettingsError:
    from raibid_gitops.problems import Problem

    message = f"{file} is refused: {why}"
    return SettingsError(message, hint="YAML anchors and aliases (&name / *name) are fine for a few values, "
                                       "not to build large structures; write the values out",
                         problems=[Problem(file=file, field="(file)", message=f"refused: {why}")])


def load_rt(text: str, file: str, *, max_nodes: int = MAX_SETTINGS_NODES,
            max_depth: int = MAX_SETTINGS_DEPTH) -> Any:
    """Round-trip load one document, bounded (:func:`check_bounds`); a malformed file raises
    SettingsError naming the line."""
    from ruamel.yaml.error import YAMLError

    try:
        doc = rt_yaml().load(text)
    except YAMLError as exc:
        line, problem = _problem_location(exc)
        raise _malformed(file, line, problem, hint="check the indentation and quoting") from exc
    except (RecursionError, ValueError, OverflowError) as exc:
        raise _unreadable(file, text, exc) from exc
    check_bounds(doc, file, max_nodes=max_nodes, max_depth=max_depth)
    return doc


def load_plain(text: str, file: str) -> Any:
    """One document as plain data, as ``to_plain(load_rt(text, file))`` gives it and bounded
    like it: read by libyaml where :mod:`raibid_gitops.yaml12` promises ruamel's result (a
    command that reads a kustomization then needs no ruamel at all), else by ruamel."""
    from raibid_gitops import yaml12

    docs = yaml12.documents(text)
    if docs is not None and len(docs) == 1:
        data = docs[0][1]
        check_bounds(data, file)
        return data
    return to_plain(load_rt(text, file))


def load_all_rt(text: str, file: str) -> list[Any]:
    """Every document of a manifest file, bounded like :func:`load_rt` with manifest limits."""
    from ruamel.yaml.error import YAMLError

    try:
        docs = [d for d in rt_yaml().load_all(text) if d is not None]
    except YAMLError as exc:
        line, problem = _problem_location(exc)
        raise _malformed(file, line, problem) from exc
    except (RecursionError, ValueError, OverflowError) as exc:
        raise _unreadable(file, text, exc) from exc
    check_bounds(docs, file, max_nodes=MAX_MANIFEST_NODES, max_depth=MAX_MANIFEST_DEPTH)
    return docs


def check_settings_size(size: int, file: str) -> None:
    """Refuse settings of ``size`` bytes over :data:`MAX_SETTINGS_BYTES` before parsing them."""
    from raibid_gitops.problems import Problem

    if size > MAX_SETTINGS_BYTES:
        why = (f"it is {size} bytes; settings.yaml may have at most {MAX_SETTINGS_BYTES} "
               f"({MAX_SETTINGS_BYTES // 1024} KiB)")
        raise SettingsError(f"{file} is refused: {why}",
                            hint="settings.yaml holds settings only; keep large content (scripts, data) in the "
                                 "repositories the jobs build",
                            problems=[Problem(file=file, field="(file)", message=f"refused: {why}")])


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

    check_settings_size(len(text.encode("utf-8", "surrogatepass")), file)
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


def load_settings_fast(text: str, file: str) -> tuple[Any, dict[str, int]] | None:
    """(plain data, key lines) of settings.yaml exactly as ``to_plain(load_settings_doc())`` and
    ``key_lines()`` give them, read by libyaml (:mod:`raibid_gitops.yaml12`) instead of ruamel's
    round-trip loader; None where that is not certain, or where load_settings_doc would refuse
    the text (it then does, in its own words). Bounds and size are checked as there.

    Certain means: one document, every key a plain string, every scalar one yaml12 constructs
    on its fast path (strings, null, true/false, decimal integers), no aliases; and no unquoted
    YAML-1.1 word among the values (load_settings_doc refuses those, naming them)."""
    from raibid_gitops import yaml12

    check_settings_size(len(text.encode("utf-8", "surrogatepass")), file)
    docs = yaml12.documents(text)
    if docs is None or len(docs) != 1:
        return None
    node, data = docs[0]
    lines: dict[str, int] = {}

    class Unsure(Exception):
        pass

    def walk(n: Any, value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for (key_node, value_node), key in zip(n.value, value, strict=True):
                if not isinstance(key, str) or key_node.tag != yaml12.PLAIN_STRING:
                    raise Unsure
                lines[f"{prefix}{key}"] = key_node.start_mark.line + 1
                walk(value_node, value[key], f"{prefix}{key}.")
        elif isinstance(value, list):
            for i, (item_node, item) in enumerate(zip(n.value, value, strict=True)):
                lines[f"{prefix}{i}"] = item_node.start_mark.line + 1
                walk(item_node, item, f"{prefix}{i}.")
        elif n.tag == yaml12.PLAIN_STRING and value.lower() in _YAML11_BOOL_ONLY:
            raise Unsure  # a YAML-1.1 trap: load_settings_doc reports it

    try:
        walk(node, data, "")
    except (Unsure, AttributeError, TypeError, RecursionError):
        return None
    check_bounds(data, file)
    return data, lines


_NUMERIC = re.compile(r"[-+]?[0-9][0-9_.:eE+-]*|0x[0-9a-fA-F]+|0o[0-7]+|\.inf|\.nan")


def needs_quotes(text: str) -> bool:
    """Whether plain ``text`` would be misread: by a YAML-1.1 reader (``on``, ``yes``, ``1e3``,
    sexagesimal ``1:30``) or by any YAML reader (a leading indicator, ``: ``, `` #``, padding)."""
    return (
        text == "" or text.lower() in YAML11_TRAPS or _NUMERIC.fullmatch(text) is not None
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
