"""Validated settings as plain, typed, immutable objects: what every consumer reads.

They are made only from data a validator accepted (:mod:`.certify`, or the pydantic model of
:mod:`.model` when the certifier was not sure), so they check nothing themselves; that keeps
them cheap to import and to build. Attribute names are the model's (``max_replicas``), keys of
:meth:`Settings.data` the file's (``maxReplicas``). ``tests/test_settings_certify.py`` checks
that these classes have exactly the model's fields, in its order.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal


def to_camel(name: str) -> str:
    """``max_replicas`` -> ``maxReplicas`` (pydantic's alias generator, for our names)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


#: View class -> its (field name, camelCase key) pairs, made once per class.
_KEYS: dict[type, tuple[tuple[str, str], ...]] = {}


class View:
    """An immutable record of accepted settings, with the fields its class annotates.

    Not a dataclass: building a dozen dataclasses costs ~9 ms at import (code generation per
    class), a tenth of what this package saves by not importing pydantic."""

    #: field name -> the view class of a nested section, or of the items of a tuple field.
    NESTED: ClassVar[dict[str, type[View]]] = {}

    def __init__(self, **values: Any) -> None:
        names = [name for name, _ in self.field_keys()]
        if values.keys() != set(names):
            raise TypeError(f"{type(self).__name__} takes exactly {names}, not {sorted(values)}")
        for name in names:
            object.__setattr__(self, name, values[name])

    @classmethod
    def field_keys(cls) -> tuple[tuple[str, str], ...]:
        keys = _KEYS.get(cls)
        if keys is None:
            names = [n for c in reversed(cls.__mro__) for n in c.__dict__.get("__annotations__", {})
                     if n != "NESTED"]
            keys = _KEYS[cls] = tuple((n, to_camel(n)) for n in names)
        return keys

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name, _ in self.field_keys())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, View) and type(other) is type(self) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n, _ in self.field_keys()) + ")"

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Any:
        """The view of accepted, complete data (every key present, as a validator returns it)."""
        values: dict[str, Any] = {}
        for name, key in cls.field_keys():
            value = data[key]
            nested = cls.NESTED.get(name)
            if nested is not None:
                value = (tuple(nested.from_data(item) for item in value) if isinstance(value, list)
                         else nested.from_data(value))
            values[name] = value
        return cls(**values)

    def data(self) -> dict[str, Any]:
        """Plain data with camelCase keys, as settings.yaml spells them (a new copy each time)."""
        out: dict[str, Any] = {}
        for name, key in self.field_keys():
            value = getattr(self, name)
            if isinstance(value, View):
                value = value.data()
            elif isinstance(value, tuple):
                value = [item.data() for item in value]
            out[key] = value
        return out


class Capacity(View):
    cpu: str
    memory: str


class Nodes(View):
    count: int
    cpu: str
    memory: str
    gpus: int


class Cluster(View):
    NESTED = {"nodes": Nodes, "capacity": Capacity}
    namespace: str
    nodes: Nodes
    capacity: Capacity


class Retention(View):
    finished_job_seconds: int
    finished_jobs: int
    dead_letters: int


class Sentinel(View):
    addresses: str
    master_name: str
    replicas: int
    ack_replicas: int
    ack_timeout_seconds: int


class Queue(View):
    NESTED = {"sentinel": Sentinel, "retention": Retention}
    mode: Literal["single", "sentinel"]
    redis_address: str
    sentinel: Sentinel
    stream: str
    consumer_group: str
    dead_letter_stream: str
    max_len: int
    max_deliveries: int
    claim_idle_seconds: int
    heartbeat_seconds: int
    retention: Retention


class Step(View):
    name: str
    run: str
    timeout_seconds: int


class Agents(View):
    NESTED = {"default_pipeline": Step}
    image: str
    min_replicas: int
    max_replicas: int
    cpu: str
    memory: str
    gpus: int
    job_timeout_seconds: int
    ttl_seconds_after_finished: int
    idle_timeout_seconds: int
    log_max_len: int
    default_pipeline: tuple[Step, ...]


class Scaling(View):
    polling_interval: int
    lag_count: int
    activation_lag_count: int
    scaling_strategy: Literal["default", "custom", "accurate", "eager"]
    successful_jobs_history_limit: int
    failed_jobs_history_limit: int


class Gitea(View):
    url: str
    owner: str
    repo: str
    branch: str

    @property
    def clone_url(self) -> str:
        return f"{self.url}/{self.owner}/{self.repo}.git"


class Flux(View):
    interval: str
    path: str
    prune: bool
    timeout: str
    wait: bool


class Settings(View):
    """settings.yaml: the one file a person edits."""

    NESTED = {
        "cluster": Cluster, "queue": Queue, "agents": Agents, "scaling": Scaling, "gitea": Gitea, "flux": Flux}
    cluster: Cluster
    queue: Queue
    agents: Agents
    scaling: Scaling
    gitea: Gitea
    flux: Flux

    def hash(self) -> str:
        """A stable hash of the values (not the comments): what agents report they run."""
        canonical = json.dumps(self.data(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def get(self, key: str) -> Any:
        from raibid_gitops.errors import SettingsError, shown
        from raibid_gitops.settings import did_you_mean

        node: Any = self.data()
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise SettingsError(f"unknown setting {shown(key)}", hint=did_you_mean(key[:200]))
            node = node[part]
        return node
