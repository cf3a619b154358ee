"""Edit settings.yaml by round trip: comments, key order and quoting kept; only the lines of
changed values differ."""

from __future__ import annotations

from typing import Any

from raibid_gitops import yamlio
from raibid_gitops.errors import SettingsError


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


def update_text(text: str, changes: dict[str, Any], file: str = "settings.yaml") -> str:
    """Return settings.yaml text with the dotted keys set to the given (validated) values."""
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
