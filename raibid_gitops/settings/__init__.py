"""The settings contract: the typed settings of ``settings.yaml``.

One model is the single source of every name and number the manifests, the agent, the queue
producer and the TUI use. Keys are camelCase, as they are spelled in settings.yaml and on the
command line (``raibid gitops set agents.maxReplicas=12``).

The package keeps the cost of that contract off every command's start:

- :mod:`.views`: the :class:`Settings` every consumer reads (plain frozen dataclasses);
- :mod:`.rules`: the rules beyond types and ranges, written once for both validators;
- :mod:`.certify`: the fast path, which accepts what is certainly valid;
- :mod:`.model`: the pydantic model, the validator of record: imported only when the fast
  path is not sure, and it words every refusal.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from raibid_gitops import contract
from raibid_gitops.errors import SettingsError, shown
from raibid_gitops.quantities import format_bytes, format_cpu, parse_quantity
from raibid_gitops.settings.rules import (
    CLAIM_HEARTBEAT_FACTOR,
    MAX_NODES,
    MAX_SENTINEL_ADDRESSES,
    CrossFieldError,
)
from raibid_gitops.settings.views import (
    Agents,
    Capacity,
    Cluster,
    Flux,
    Gitea,
    Nodes,
    Queue,
    Retention,
    Scaling,
    Sentinel,
    Settings,
    Step,
    View,
)

__all__ = [
    "CLAIM_HEARTBEAT_FACTOR", "MAX_NODES", "MAX_SENTINEL_ADDRESSES", "SCHEMA_FILE", "SETTINGS_FILE",
    "Agents", "Capacity", "Cluster", "CrossFieldError", "Flux", "Gitea", "Nodes", "Queue", "Retention",
    "Scaling", "Sentinel", "Settings", "Step", "all_keys", "apply_assignments", "coerce_value", "defaults",
    "did_you_mean", "get_data", "json_schema", "load_data", "load_path", "load_text", "parse_assignments",
    "schema_text", "text_digest", "validate_data", "with_nodes",
]

#: The file name inside the overlay and the ConfigMap's key: one spelling.
SETTINGS_FILE = contract.SETTINGS_KEY
SCHEMA_FILE = "settings.schema.json"


# ---------------------------------------------------------------------------------------------
# Keys


def all_keys() -> list[str]:
    """Every settable leaf key, dotted and camelCase (``agents.maxReplicas``)."""
    out: list[str] = []

    def walk(node: View, prefix: str) -> None:
        for name, key in node.field_keys():
            child = getattr(node, name)
            if isinstance(child, View):
                walk(child, prefix + key + ".")
            else:
                out.append(prefix + key)

    walk(defaults(), "")
    return out


def did_you_mean(key: str) -> str:
    import difflib

    keys = all_keys()
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    if not close:
        # Match on the last segment too: "maxReplica" -> agents.maxReplicas
        tail = key.rsplit(".", 1)[-1].lower()
        close = [k for k in keys if tail and tail in k.lower()][:3]
    if close:
        return "did you mean " + " or ".join(close) + "?"
    return "run `raibid gitops get` to list the settings"


# ---------------------------------------------------------------------------------------------
# Validation


def validate_data(data: Any, file: str = SETTINGS_FILE, lines: dict[str, int] | None = None,
                  touched: Iterable[str] = ()) -> Settings:
    """The settings of ``data`` (parsed settings.yaml), or SettingsError naming every problem
    at its file, line and field. A cross-field refusal is reported on the setting the caller
    changed (``touched``, e.g. the keys of `set`), else on the first it names."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"{file}: the top level must be a mapping of sections (cluster, queue, agents, ...)")
    from raibid_gitops.settings import certify

    settings = certify.certify(data)
    if settings is not None:
        return settings
    from raibid_gitops.settings import model

    # Valid after all (e.g. a string the certifier leaves to pydantic's regex engine): the
    # model's own dump is complete and normalised, as the certifier's would be.
    validated: Settings = Settings.from_data(model.validate(data, file, lines, touched).data())
    return validated


@lru_cache(maxsize=1)
def defaults() -> Settings:
    """Every setting at its default (one shared, immutable object)."""
    return validate_data({}, "(defaults)")


def json_schema() -> dict[str, Any]:
    """settings.schema.json as data."""
    return json.loads(schema_text())


def schema_text() -> str:
    """settings.schema.json, as shipped with the package (written from the model, see
    :mod:`.model`; a test keeps the two equal)."""
    from raibid_gitops.settings import certify

    return certify.SCHEMA_PATH.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Loading


def text_digest(text: str) -> str:
    """A digest of settings.yaml's text as written, for versions that do not validate (which
    have no :meth:`Settings.hash`). Line endings and trailing blank space are normalised: git
    output and a mounted ConfigMap file differ in those only."""
    normal = text.replace("\r\n", "\n").rstrip()
    return "sha256:" + hashlib.sha256(normal.encode()).hexdigest()[:16]


#: Texts loaded lately -> their settings (immutable, so shared safely). `raibid gitops set`
#: reads the same text up to four times (target branch, base, the edit's check, verify).
_LOADED: dict[tuple[str, str], Settings] = {}
_LOADED_MAX = 8


def load_text(text: str, file: str = SETTINGS_FILE) -> Settings:
    """Parse and validate settings.yaml text; every failure names the file, line and field.

    Bounded (see :mod:`raibid_gitops.yamlio`): text over 256 KiB, or aliases expanding past
    10,000 values, are refused before anything walks the data, so a hostile version cannot
    stall the CLI, the TUI or an agent (which then keeps its last good settings)."""
    from raibid_gitops import yamlio

    key = (text, file)
    known = _LOADED.get(key)
    if known is not None:
        return known
    # libyaml where it gives exactly what ruamel's round trip gives (see yamlio), else ruamel.
    fast = yamlio.load_settings_fast(text, file)
    if fast is not None:
        data, lines = fast
    else:
        doc = yamlio.load_settings_doc(text, file)
        data, lines = yamlio.to_plain(doc), yamlio.key_lines(doc)
    settings = validate_data(data, file, lines)
    if len(_LOADED) >= _LOADED_MAX:
        _LOADED.clear()  # not an LRU: clearing needs no iteration, so threads may share it
    _LOADED[key] = settings
    return settings


def load_path(path: Path, file: str | None = None) -> Settings:
    """Load a settings file; ``file`` names it in messages (default: the path)."""
    name = file or str(path)
    try:
        from raibid_gitops import yamlio

        yamlio.check_settings_size(path.stat().st_size, name)  # before reading a huge file at all
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SettingsError(f"{path} does not exist",
                            hint="run `raibid gitops init DIR` to create a config repository") from exc
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{name} is not UTF-8 text") from exc
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return load_text(text, name)


# ---------------------------------------------------------------------------------------------
# KEY=VALUE parsing for `init --set` and `set`

#: Integers on the command line: an optional sign and at most 18 digits (every integer
#: setting is far smaller; this keeps int() away from Python's 4300-digit limit).
_INT_RE = re.compile(r"-?[0-9]{1,18}")
#: A KEY=VALUE is at most this long: the longest value is a pipeline given as JSON.
MAX_ASSIGNMENT = 65536


def coerce_value(key: str, raw: str) -> Any:
    """Turn the text of KEY=VALUE into the type the key wants, before model validation.

    YAML-1.1 spellings (yes/no/on/off) are refused for booleans: Kubernetes tools read them
    as booleans while a YAML-1.2 reader reads strings, which is how config drifts silently.
    Nothing is trimmed: ``"20\n"`` is refused, not read as 20.
    """
    current = defaults().get(key)  # raises with a hint for unknown keys
    if isinstance(current, bool):
        if raw in ("true", "false"):
            return raw == "true"
        raise SettingsError(f"{key} must be true or false, not {shown(raw)}")
    if isinstance(current, int):
        if not _INT_RE.fullmatch(raw):
            raise SettingsError(f"{key} must be an integer (digits only), not {shown(raw)}")
        return int(raw)
    if isinstance(current, (list, tuple)):
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, list):
            raise SettingsError(f"{key} takes a JSON list, "
                                "e.g. '[{\"name\":\"test\",\"run\":\"make test\"}]'") from None
        return value
    return raw


def parse_assignments(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if len(item) > MAX_ASSIGNMENT:
            raise SettingsError(f"{shown(item)} is too long (at most {MAX_ASSIGNMENT} characters)")
        key, sep, value = item.partition("=")
        if not sep or not key or key != key.strip():
            raise SettingsError(f"{shown(item)} is not KEY=VALUE", hint="e.g. agents.maxReplicas=6")
        if key in out:
            raise SettingsError(f"{key} is given twice")
        out[key] = coerce_value(key, value)
    return out


def with_nodes(changes: dict[str, Any], count: int) -> dict[str, Any]:
    """``changes`` plus ``count`` nodes, as `init --nodes N` means it: cluster.nodes.count, and
    cluster.capacity grown to all N nodes of the per-node shape (given in ``changes``, else the
    default), unless ``changes`` sets the capacity itself."""
    if not 1 <= count <= MAX_NODES:
        raise SettingsError(f"--nodes must be from 1 to {MAX_NODES}, not {count}")
    if "cluster.nodes.count" in changes:
        raise SettingsError("--nodes and cluster.nodes.count both give the number of nodes", hint="give one of them")
    out = {**changes, "cluster.nodes.count": count}
    shape = defaults().cluster.nodes
    for kind, fmt in (("cpu", format_cpu), ("memory", format_bytes)):
        per_node = changes.get(f"cluster.nodes.{kind}", getattr(shape, kind))
        try:
            total = parse_quantity(per_node) * count
        except ValueError:
            continue  # validation reports the malformed quantity, naming its key
        out.setdefault(f"cluster.capacity.{kind}", fmt(total))
    return out


def load_data(text: str, file: str = SETTINGS_FILE) -> dict[str, Any]:
    """Parse settings.yaml text without validating it (the same bounds as :func:`load_text`):
    for a change that may turn an invalid file into a valid one."""
    from raibid_gitops import yamlio

    data = yamlio.to_plain(yamlio.load_settings_doc(text, file))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{file}: the top level must be a mapping of sections (cluster, queue, agents, ...)")
    return data


def get_data(data: Any, key: str) -> Any:
    """The value at dotted ``key`` in plain settings data, or None where it is absent."""
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def apply_assignments(settings: Settings | dict[str, Any], changes: dict[str, Any],
                      file: str = SETTINGS_FILE) -> Settings:
    """``changes`` applied to ``settings`` (a valid model, or plain data that may be invalid as
    it stands), validated as a whole."""
    import copy

    data = settings.data() if isinstance(settings, Settings) else copy.deepcopy(settings)
    for key, value in changes.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}  # a section missing from an invalid file
            node = node[part]
        node[parts[-1]] = value
    return validate_data(data, file, touched=changes)
