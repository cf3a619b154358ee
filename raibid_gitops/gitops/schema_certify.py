"""Certain verdicts for the subset of JSON Schema the shipped schemas use, without jsonschema.

Importing jsonschema costs about as much as a whole ``kustomize build`` (issue 14), and nearly
every rendered object is valid. So an object is checked here first. :func:`certify` answers
only when it is certain of jsonschema's verdict (Draft 2020-12, formats not asserted, as
:mod:`raibid_gitops.gitops.schemas` validates): True when jsonschema finds no error, False when
it finds one. Anything else — a keyword outside the subset, a float where an integer is
expected, a reference outside the document, an ``enum`` of non-strings — raises
:class:`Unsure`, and jsonschema decides (it also words every problem; this never does).

tests/test_schema_certify.py holds it to that on every rendered object and on thousands of
mutations of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

#: Keywords that never make an instance invalid here: annotations (``format`` too: nothing
#: asserts formats), and ``$defs``, which only holds what ``$ref`` points at.
_ANNOTATIONS = frozenset({"description", "default", "title", "format", "examples", "$schema", "$comment",
                          "deprecated", "readOnly", "writeOnly", "discriminator", "$defs"})


class Unsure(Exception):
    """This module cannot tell what jsonschema would say."""


def _type_is(instance: Any, name: str) -> bool:
    if name == "string":
        return isinstance(instance, str)
    if name == "object":
        return isinstance(instance, dict)
    if name == "array":
        return isinstance(instance, list)
    if name == "boolean":
        return isinstance(instance, bool)
    if name == "null":
        return instance is None
    if name == "integer":
        if isinstance(instance, float):
            raise Unsure  # jsonschema counts 1.0 as an integer; not worth mirroring
        return isinstance(instance, int) and not isinstance(instance, bool)
    if name == "number":
        return isinstance(instance, (int, float)) and not isinstance(instance, bool)
    raise Unsure


def _all(results: list[Callable[[], bool]]) -> bool:
    """True if every check is True, False if any is False (even when others are unsure)."""
    unsure = False
    for check in results:
        try:
            if not check():
                return False
        except Unsure:
            unsure = True
    if unsure:
        raise Unsure
    return True


def _tri(check: Callable[[], bool]) -> bool | None:
    try:
        return check()
    except Unsure:
        return None


class _Certifier:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Any] = {}

    def resolve(self, ref: str) -> Any:
        if ref in self.refs:
            return self.refs[ref]
        if not ref.startswith("#/") or "%" in ref:
            raise Unsure
        node: Any = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise Unsure
            node = node[part]
        self.refs[ref] = node
        return node

    def check(self, instance: Any, schema: Any) -> bool:
        if schema is True:
            return True
        if schema is False:
            return False
        if not isinstance(schema, dict):
            raise Unsure
        checks: list[Callable[[], bool]] = []
        for key, value in schema.items():
            if key in _ANNOTATIONS or key.startswith("x-"):
                continue
            handler = _KEYWORDS.get(key, _kw_unknown)
            checks.append(partial(handler, self, instance, value, schema))
        return _all(checks)


def _kw_unknown(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    raise Unsure  # outside the subset; another keyword may still be certain that it is invalid


def _kw_type(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(value, str):
        raise Unsure
    return _type_is(instance, value)


def _kw_properties(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(instance, dict):
        return True
    if not isinstance(value, dict):
        raise Unsure
    return _all([partial(c.check, instance[k], value[k]) for k in value if k in instance])


def _kw_additional(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(instance, dict):
        return True
    if "patternProperties" in schema:
        raise Unsure
    known = schema.get("properties") or {}
    extra = [k for k in instance if k not in known]
    if value is False:
        return not extra
    return _all([partial(c.check, instance[k], value) for k in extra])


def _kw_required(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(instance, dict):
        return True
    if not isinstance(value, list):
        raise Unsure
    return all(k in instance for k in value)


def _kw_items(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(instance, list):
        return True
    if not isinstance(value, (dict, bool)):
        raise Unsure
    return _all([partial(c.check, item, value) for item in instance])


def _kw_ref(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(value, str):
        raise Unsure
    return c.check(instance, c.resolve(value))


def _kw_all_of(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(value, list):
        raise Unsure
    return _all([partial(c.check, instance, s) for s in value])


def _kw_any_of(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(value, list):
        raise Unsure
    verdicts = [_tri(partial(c.check, instance, s)) for s in value]
    if True in verdicts:
        return True
    if all(v is False for v in verdicts):
        return False
    raise Unsure


def _kw_one_of(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(value, list):
        raise Unsure
    verdicts = [_tri(partial(c.check, instance, s)) for s in value]
    if None in verdicts:
        raise Unsure
    return verdicts.count(True) == 1


def _kw_enum(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    # jsonschema compares a string only with strings: certain for strings, unsure otherwise.
    if not isinstance(value, list) or not isinstance(instance, str):
        raise Unsure
    return any(isinstance(e, str) and e == instance for e in value)


def _kw_pattern(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(instance, str):
        return True
    if not isinstance(value, str):
        raise Unsure
    return re.search(value, instance) is not None  # what jsonschema runs, too


def _kw_max_length(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(instance, str):
        return True
    if not isinstance(value, int) or isinstance(value, bool):
        raise Unsure
    return len(instance) <= value


def _kw_min_length(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(instance, str):
        return True
    if not isinstance(value, int) or isinstance(value, bool):
        raise Unsure
    return len(instance) >= value


def _kw_minimum(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    if isinstance(instance, bool) or not isinstance(instance, (int, float)):
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)) or isinstance(instance, float):
        raise Unsure
    return instance >= value


def _kw_min_items(c: _Certifier, instance: Any, value: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(instance, list):
        return True
    if not isinstance(value, int) or isinstance(value, bool):
        raise Unsure
    return len(instance) >= value


_KEYWORDS: dict[str, Callable[[_Certifier, Any, Any, dict[str, Any]], bool]] = {
    "type": _kw_type, "properties": _kw_properties, "additionalProperties": _kw_additional,
    "required": _kw_required, "items": _kw_items, "$ref": _kw_ref, "allOf": _kw_all_of, "anyOf": _kw_any_of,
    "oneOf": _kw_one_of, "enum": _kw_enum, "pattern": _kw_pattern, "maxLength": _kw_max_length,
    "minLength": _kw_min_length, "minimum": _kw_minimum, "minItems": _kw_min_items,
}


def certify(instance: Any, schema: dict[str, Any]) -> bool:
    """True: jsonschema finds no error in ``instance``; False: it finds at least one.
    :class:`Unsure` when this module cannot tell (see the module doc)."""
    try:
        return _Certifier(schema).check(instance, schema)
    except RecursionError:
        raise Unsure from None
