"""Certify settings data valid without pydantic: the fast path of every settings load.

``raibid gitops set`` reads settings.yaml up to four times and the agent on every ConfigMap
change; importing pydantic and building the model costs about 110 ms a process, more than
the whole floor `set` is measured against (``kustomize build`` and ``git commit``). Nearly
every file read is valid, so this module answers the common case alone: it walks the data
along the shipped JSON schema (``settings.schema.json``, written from the model, so the types,
ranges, patterns, lengths, enums and defaults are the model's own) and runs the rules of
:mod:`.rules` the model runs. It returns the complete, normalised data, exactly what the
model's ``model_dump`` gives, or ``None`` for "not sure"; then :mod:`.model` decides, and
words any refusal. So it may only ever be stricter than the model, never looser:

- types are exact (``type(v) is int``: no bool, no float, no str subclass);
- a string with a pattern is judged only when it is printable ASCII, where Python's ``re``
  and the Rust engine pydantic uses agree (``$`` becomes ``\\Z``: no trailing newline);
- a schema keyword this walker does not know makes it unsure of everything.

``tests/test_settings_certify.py`` checks it against the model on thousands of mutations:
never valid where the model refuses, the same data where both accept.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from raibid_gitops.settings import rules, views

SCHEMA_PATH = Path(__file__).with_name("settings.schema.json")
#: Every keyword the walker understands; annotations (title, description, $schema, ...) and
#: the structure it follows. Anything else: unsure.
_KNOWN = frozenset({
    "$defs", "$id", "$schema", "$ref", "title", "description", "default", "type", "properties",
    "additionalProperties", "required", "items", "maxItems", "minItems", "minimum", "maximum",
    "minLength", "maxLength", "pattern", "enum",
})
_PRINTABLE_ASCII = re.compile(r"[ -~]*")


class _Unsure(Exception):
    """The model must judge this data."""


class _Walker:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.defs: dict[str, Any] = schema.get("$defs", {})
        self.root = schema
        self.patterns: dict[str, re.Pattern[str]] = {}
        self._scan(schema)

    def _scan(self, node: Any) -> None:
        """Refuse to walk a schema with keywords it does not know; compile the patterns."""
        if not isinstance(node, dict):
            return
        unknown = set(node) - _KNOWN
        if unknown:
            raise _Unsure(f"unknown schema keywords {sorted(unknown)}")
        if "pattern" in node:
            pattern = node["pattern"]
            # Rust's (and ECMAScript's) ``$`` is the end of the text; Python's also matches
            # before a final newline. Only a final ``$`` is used in these patterns.
            self.patterns[pattern] = re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern)
        for key, value in node.items():
            if key in ("properties", "$defs"):
                for sub in value.values():
                    self._scan(sub)
            elif key in ("items", "additionalProperties"):
                self._scan(value)

    def section(self, schema: dict[str, Any], name: str, data: Any) -> dict[str, Any]:
        """A model (class ``name``): its complete, normalised data."""
        before = rules.MODEL_BEFORE.get(name)
        if before is not None:
            data = before(data)
        if type(data) is not dict:
            raise _Unsure
        props: dict[str, Any] = schema["properties"]
        if schema.get("additionalProperties") is not False or not data.keys() <= props.keys():
            raise _Unsure
        out: dict[str, Any] = {}
        required = schema.get("required", ())
        for key, prop in props.items():
            if key in data:
                value = data[key]
            elif key in required or "default" not in prop:
                raise _Unsure
            else:
                # Defaults go through the same checks (the model validates defaults too).
                value = copy.deepcopy(prop["default"])
            hook = rules.FIELD_BEFORE.get((name, key))
            if hook is not None:
                value = hook(value)
            value = self.value(prop, value)
            hook = rules.FIELD_AFTER.get((name, key))
            if hook is not None:
                value = hook(value)
            out[key] = value
        return out

    def value(self, prop: dict[str, Any], value: Any) -> Any:
        ref = prop.get("$ref")
        if ref is not None:
            name = ref.rpartition("/")[2]
            return self.section(self.defs[name], name, value)
        kind = prop.get("type")
        if kind == "integer":
            if type(value) is not int:
                raise _Unsure
            if ("minimum" in prop and value < prop["minimum"]) or ("maximum" in prop and value > prop["maximum"]):
                raise _Unsure
        elif kind == "boolean":
            if type(value) is not bool:
                raise _Unsure
        elif kind == "string" or "enum" in prop:
            if type(value) is not str:
                raise _Unsure
            if "enum" in prop and value not in prop["enum"]:
                raise _Unsure
            if len(value) < prop.get("minLength", 0) or len(value) > prop.get("maxLength", len(value)):
                raise _Unsure
            pattern = prop.get("pattern")
            if pattern is not None and not (_PRINTABLE_ASCII.fullmatch(value)
                                            and self.patterns[pattern].match(value)):
                raise _Unsure
        elif kind == "array":
            if type(value) not in (list, tuple):
                raise _Unsure
            if len(value) < prop.get("minItems", 0) or len(value) > prop.get("maxItems", len(value)):
                raise _Unsure
            return [self.value(prop["items"], item) for item in value]
        else:
            raise _Unsure  # a type this walker does not know
        return value


@lru_cache(maxsize=1)
def _walker() -> _Walker | None:
    try:
        return _Walker(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
    except (OSError, ValueError, _Unsure):
        return None  # no usable schema: every load goes to the model


def _check_rules(node: views.View) -> None:
    for rule in rules.MODEL_AFTER.get(type(node).__name__, ()):
        rule(node)
    for name in node.NESTED:
        child = getattr(node, name)
        for item in child if isinstance(child, tuple) else (child,):
            _check_rules(item)


def certify(data: Any) -> views.Settings | None:
    """The settings of ``data`` when they are certainly valid; None when the model must judge."""
    walker = _walker()
    if walker is None:
        return None
    try:
        settings: views.Settings = views.Settings.from_data(walker.section(walker.root, "Settings", data))
        _check_rules(settings)
    # Any failure only means "not sure": the model judges the same data and words the refusal
    # (a rule's ValueError, decimal arithmetic on an odd quantity, a recursion limit).
    except Exception:  # noqa: BLE001
        return None
    return settings


def pipeline(data: Any) -> tuple[views.Step, ...] | None:
    """The steps of a repository's ``.raibid.yml`` (``{steps: [...]}``, as
    :class:`.model.Pipeline` takes it) when they are certainly valid; None when the model must
    judge."""
    walker = _walker()
    if walker is None or type(data) is not dict or data.keys() != {"steps"}:
        return None
    steps = {"type": "array", "minItems": 1, "maxItems": rules.MAX_STEPS, "items": {"$ref": "#/$defs/Step"}}
    try:
        return tuple(views.Step.from_data(item) for item in walker.value(steps, data["steps"]))
    except Exception:  # noqa: BLE001 - "not sure", as in certify()
        return None
