"""The settings contract: the typed model of ``settings.yaml``.

One model is the single source of every name and number the manifests, the agent, the queue
producer and the TUI use. Keys are camelCase, as they are spelled in settings.yaml and on the
command line (``raibid gitops set agents.maxReplicas=12``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from raibid_gitops import contract, names
from raibid_gitops.errors import SettingsError, shown
from raibid_gitops.problems import Problem
from raibid_gitops.quantities import format_bytes, format_cpu, parse_quantity

#: The file name inside the overlay and the ConfigMap's key: one spelling.
SETTINGS_FILE = contract.SETTINGS_KEY
SCHEMA_FILE = "settings.schema.json"

#: claimIdleSeconds must exceed this many heartbeats, so a live agent that misses a
#: couple of heartbeats (GC pause, slow Redis) is not mistaken for a dead one.
CLAIM_HEARTBEAT_FACTOR = 3

# Patterns of string settings. pydantic runs them with Rust's regex engine, where ``$`` is
# the end of the text (no trailing newline slips through), and they go into the JSON schema
# for editors, whose ECMAScript ``$`` means the same.
_K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DURATION = r"^([0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h)){1,4}$"
_STREAM = r"^[A-Za-z0-9:_.\-{}]+$"
#: Redis keys and group names stay short: they are repeated in every entry's metadata.
_STREAM_MAX = 200


class CrossFieldError(ValueError):
    """A rule over several settings; ``fields`` names them, the one to blame first."""

    def __init__(self, message: str, *fields: str) -> None:
        super().__init__(message)
        self.fields = fields


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True,
        validate_default=True,
    )


def _quantity(kind: str):
    """A positive Kubernetes quantity, written as a number (``2``) or a string (``"2"``, ``4Gi``).

    The text is kept exactly: no stripping, so ``" 2"`` or ``"2\n"`` is refused here rather
    than by the Kubernetes schema after it was committed."""

    def check(v: Any) -> str:
        if isinstance(v, bool):
            raise ValueError(f"{kind} must be a quantity like 2 or 4Gi, not a boolean")
        if not isinstance(v, (str, int, float)):
            raise ValueError(f"{kind} must be a quantity like 2 or 4Gi")
        s = str(v)
        if parse_quantity(s) <= 0:
            raise ValueError(f"{kind} must be more than 0")
        return s

    return check


class Capacity(_Model):
    """What raibid-ci may use of the node: the agents' total must fit."""

    cpu: str = Field("20", description="CPU cores available to agents (DGX Spark: 20 Arm cores).")
    memory: str = Field("128Gi", description="Memory available to agents (DGX Spark: 128 GiB unified).")

    _cpu = field_validator("cpu", mode="before")(_quantity("cluster.capacity.cpu"))
    _memory = field_validator("memory", mode="before")(_quantity("cluster.capacity.memory"))


#: Most nodes a config describes: far more DGX Sparks than one rack holds, and a bound on the
#: arithmetic of the fit check.
MAX_NODES = 64


class Nodes(_Model):
    """The nodes agents run on: how many, and what ONE of them offers agents (all alike: a
    cluster of DGX Sparks). An agent never spans nodes, so one agent must fit one node, and
    all agents must fit the nodes one by one (packing), not only in total."""

    count: StrictInt = Field(1, ge=1, le=MAX_NODES, description="Nodes agents may run on.")
    cpu: str = Field("20", description="CPU cores one node offers agents (DGX Spark: 20 Arm cores).")
    memory: str = Field("128Gi", description="Memory one node offers agents (DGX Spark: 128 GiB unified).")
    gpus: StrictInt = Field(1, ge=0, le=8, description="nvidia.com/gpu one node offers (DGX Spark: 1).")

    _cpu = field_validator("cpu", mode="before")(_quantity("cluster.nodes.cpu"))
    _memory = field_validator("memory", mode="before")(_quantity("cluster.nodes.memory"))


class Cluster(_Model):
    namespace: str = Field("raibid-ci", pattern=_K8S_NAME, max_length=63,
                           description="Namespace of the raibid-ci stack.")
    nodes: Nodes = Field(Nodes(), description="The nodes agents run on. Left out: one node of cluster.capacity "
                                              "(what a settings.yaml from before several nodes meant).")
    capacity: Capacity = Capacity()

    @model_validator(mode="before")
    @classmethod
    def _nodes_default_from_capacity(cls, data: Any) -> Any:
        # A settings.yaml written before `nodes` existed described one node by its capacity;
        # it keeps meaning exactly that.
        if isinstance(data, dict) and "nodes" not in data and isinstance(data.get("capacity"), dict):
            cap = data["capacity"]
            data = {**data, "nodes": {k: cap[k] for k in ("cpu", "memory") if k in cap}}
        return data

    @model_validator(mode="after")
    def _capacity_within_nodes(self) -> Cluster:
        n, cap = self.nodes, self.capacity
        for kind, fmt in (("cpu", format_cpu), ("memory", format_bytes)):
            total = parse_quantity(getattr(n, kind)) * n.count
            if parse_quantity(getattr(cap, kind)) > total:
                raise CrossFieldError(
                    f"cluster.capacity.{kind} ({getattr(cap, kind)}) exceeds what the nodes offer: "
                    f"cluster.nodes.count ({n.count}) x cluster.nodes.{kind} ({getattr(n, kind)}) = {fmt(total)}",
                    f"cluster.capacity.{kind}", "cluster.nodes.count", f"cluster.nodes.{kind}",
                )
        return self


class Retention(_Model):
    """How long the queue keeps what is finished. Unfinished jobs are never removed."""

    finished_job_seconds: StrictInt = Field(
        7 * 86400, ge=60, le=365 * 86400,
        description="Seconds a finished job's status record and logs are kept after it finished.")
    finished_jobs: StrictInt = Field(
        1000, ge=10, le=1_000_000,
        description="Most finished jobs kept (records and logs); the oldest go first. "
                    "Bounds Redis memory when many jobs finish within finishedJobSeconds.")
    dead_letters: StrictInt = Field(
        1000, ge=10, le=1_000_000,
        description="Most entries kept in the dead-letter stream (XADD MAXLEN ~).")


_HOST_PORT = r"[A-Za-z0-9.\-]{1,253}:[0-9]{1,5}"
#: Sentinels one address list may name: three is the usual set, five the most anyone runs.
MAX_SENTINEL_ADDRESSES = 5


def _ports_in_range(v: str) -> str:
    for part in v.split(","):
        port = int(part.rsplit(":", 1)[1])
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not between 1 and 65535")
    return v


class Sentinel(_Model):
    """Redis with replicas and Sentinels (``queue.mode: sentinel``); ignored in single mode."""

    addresses: str = Field(
        "raibid-redis-sentinel.raibid-ci.svc.cluster.local:26379",
        pattern=rf"^{_HOST_PORT}(,{_HOST_PORT}){{0,{MAX_SENTINEL_ADDRESSES - 1}}}$",
        max_length=MAX_SENTINEL_ADDRESSES * 260,
        description="host:port of the Sentinels as the agents and KEDA reach them (comma-separated for "
                    "several; the generated Service raibid-redis-sentinel is one address for all three).")
    master_name: str = Field("raibid", pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
                             description="The name the Sentinels monitor the primary under.")
    replicas: StrictInt = Field(2, ge=1, le=8,
                                description="Redis replicas that follow the primary (pods raibid-redis-replica-N).")
    ack_replicas: StrictInt = Field(
        1, ge=0, le=8,
        description="A submit, a job's start and its result count as stored once this many replicas have "
                    "them (Redis WAIT): what survives losing the primary. 0: the primary's word only.")
    #: At most 25 s: a WAIT must answer within the clients' 30 s socket timeout.
    ack_timeout_seconds: StrictInt = Field(
        5, ge=1, le=25, description="How long one WAIT for ackReplicas waits before the writer is told.")

    _ports = field_validator("addresses")(lambda v: _ports_in_range(v))

    @model_validator(mode="after")
    def _ack_le_replicas(self) -> Sentinel:
        if self.ack_replicas > self.replicas:
            raise CrossFieldError(
                f"queue.sentinel.ackReplicas ({self.ack_replicas}) must not exceed queue.sentinel.replicas "
                f"({self.replicas}): no write could ever be confirmed",
                "queue.sentinel.ackReplicas", "queue.sentinel.replicas",
            )
        return self


class Queue(_Model):
    mode: Literal["single", "sentinel"] = Field(
        "single", description="single: one Redis (raibid-redis). sentinel: raibid-redis is the first primary, "
                              "queue.sentinel.replicas replicas follow it and three Sentinels promote one when the "
                              "primary is lost; agents, KEDA and the CLI find the primary through the Sentinels.")
    redis_address: str = Field(
        "raibid-redis.raibid-ci.svc.cluster.local:6379", pattern=rf"^{_HOST_PORT}$",
        max_length=260, description="host:port of Redis, as seen from the agents and KEDA (single mode).",
    )
    sentinel: Sentinel = Sentinel()
    stream: str = Field("raibid:jobs", pattern=_STREAM, max_length=_STREAM_MAX, description="The job stream.")
    consumer_group: str = Field("raibid-agents", pattern=_STREAM, max_length=_STREAM_MAX,
                                description="Consumer group of the agents; KEDA measures its lag.")
    dead_letter_stream: str = Field("raibid:jobs:dead", pattern=_STREAM, max_length=_STREAM_MAX,
                                    description="Where entries go after maxDeliveries failed deliveries.")
    max_len: StrictInt = Field(10000, ge=100, le=10_000_000,
                               description="Approximate cap of the job stream (XADD MAXLEN ~).")
    max_deliveries: StrictInt = Field(3, ge=1, le=100,
                                      description="Deliveries of one entry before it is dead-lettered.")
    claim_idle_seconds: StrictInt = Field(300, ge=5, le=86400,
                                          description="Idle time after which another agent takes over an entry.")
    heartbeat_seconds: StrictInt = Field(15, ge=1, le=3600,
                                         description="How often an agent refreshes its heartbeat and its entry's "
                                                     "idle time.")
    retention: Retention = Retention()

    @field_validator("redis_address")
    @classmethod
    def _port_in_range(cls, v: str) -> str:
        port = int(v.rsplit(":", 1)[1])
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not between 1 and 65535")
        return v

    @model_validator(mode="after")
    def _names_distinct(self) -> Queue:
        if self.stream == self.dead_letter_stream:
            raise CrossFieldError("queue.deadLetterStream must differ from queue.stream",
                                  "queue.deadLetterStream", "queue.stream")
        if self.claim_idle_seconds < CLAIM_HEARTBEAT_FACTOR * self.heartbeat_seconds:
            raise CrossFieldError(
                f"queue.claimIdleSeconds ({self.claim_idle_seconds}) must be at least "
                f"{CLAIM_HEARTBEAT_FACTOR} x queue.heartbeatSeconds ({self.heartbeat_seconds}) = "
                f"{CLAIM_HEARTBEAT_FACTOR * self.heartbeat_seconds}, or live agents' jobs get taken over",
                "queue.claimIdleSeconds", "queue.heartbeatSeconds",
            )
        return self


class Step(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\- ]{1,64}$")
    #: A shell script; 64 KiB is far more than a step needs and bounds what a job record carries.
    run: str = Field(min_length=1, max_length=65536)
    timeout_seconds: StrictInt = Field(1800, ge=1, le=86400)


class Agents(_Model):
    image: str = Field("gitea.raibid-ci.svc.cluster.local:3000/raibid/agent:0.1.0", min_length=1, max_length=512,
                       pattern=r"^[^\s]+$", description="Agent image (arm64), built from agent/Containerfile.")
    min_replicas: StrictInt = Field(0, ge=0, le=64,
                                    description="Agents kept even with an empty queue (0: scale from zero).")
    max_replicas: StrictInt = Field(8, ge=1, le=64, description="Most agents (Jobs) at once.")
    cpu: str = Field("2", description="CPU request and limit of one agent.")
    memory: str = Field("4Gi", description="Memory request and limit of one agent.")
    gpus: StrictInt = Field(0, ge=0, le=8,
                            description="nvidia.com/gpu per agent; >0 also sets runtimeClassName nvidia.")
    job_timeout_seconds: StrictInt = Field(3600, ge=60, le=7 * 86400,
                                           description="Hard limit of one CI job (the Job's activeDeadlineSeconds).")
    ttl_seconds_after_finished: StrictInt = Field(600, ge=0, le=7 * 86400,
                                                  description="How long a finished agent Job is kept.")
    idle_timeout_seconds: StrictInt = Field(60, ge=1, le=3600,
                                            description="A --once agent exits 0 when no job comes within this.")
    log_max_len: StrictInt = Field(10000, ge=100, le=1_000_000, description="Log lines kept per job (MAXLEN ~).")
    default_pipeline: tuple[Step, ...] = Field(
        (Step(name="test", run="make test", timeout_seconds=1800),), max_length=100,
        description="Steps run when a repository has no .raibid.yml.",
    )

    _cpu = field_validator("cpu", mode="before")(_quantity("agents.cpu"))
    _memory = field_validator("memory", mode="before")(_quantity("agents.memory"))

    @model_validator(mode="after")
    def _min_le_max(self) -> Agents:
        if self.min_replicas > self.max_replicas:
            raise CrossFieldError(
                f"agents.minReplicas ({self.min_replicas}) must not exceed agents.maxReplicas ({self.max_replicas})",
                "agents.minReplicas", "agents.maxReplicas",
            )
        return self


class Scaling(_Model):
    polling_interval: StrictInt = Field(10, ge=1, le=3600, description="Seconds between KEDA's checks of the stream.")
    lag_count: StrictInt = Field(1, ge=1, le=10000, description="Queued entries per agent (KEDA lagCount).")
    activation_lag_count: StrictInt = Field(0, ge=0, le=10000,
                                            description="Lag above which the pool wakes from zero; "
                                                        "0 = one job wakes it.")
    scaling_strategy: Literal["default", "custom", "accurate", "eager"] = Field(
        "accurate", description="KEDA ScaledJob scalingStrategy.strategy.")
    successful_jobs_history_limit: StrictInt = Field(5, ge=0, le=100)
    failed_jobs_history_limit: StrictInt = Field(10, ge=0, le=100)


class Gitea(_Model):
    url: str = Field("http://gitea.raibid-ci.svc.cluster.local:3000", pattern=r"^https?://[^\s/@]+(/[^\s]*)?$",
                     max_length=512, description="Base URL of Gitea as the cluster reaches it (no credentials).")
    owner: str = Field("raibid", pattern=r"^[A-Za-z0-9_.\-]+$", max_length=40)
    repo: str = Field("raibid-config", pattern=r"^[A-Za-z0-9_.\-]+$", max_length=100)
    branch: str = Field("main", pattern=r"^[A-Za-z0-9_./\-]+$", max_length=255)

    @field_validator("url")
    @classmethod
    def _no_slash(cls, v: str) -> str:
        return v.rstrip("/")

    # Gitea's and git's own rules beyond the character set (the patterns stay for editors).
    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str) -> str:
        return _checked(v, names.owner_problem(v))

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        return _checked(v, names.repo_name_problem(v))

    @field_validator("branch")
    @classmethod
    def _branch(cls, v: str) -> str:
        return _checked(v, names.branch_problem(v))

    @property
    def clone_url(self) -> str:
        return f"{self.url}/{self.owner}/{self.repo}.git"


class Flux(_Model):
    interval: str = Field("1m", pattern=_DURATION, description="How often Flux fetches and applies.")
    path: str = Field("./overlays/dgx-spark", pattern=r"^\./[A-Za-z0-9_./\-]*$", max_length=255)
    prune: StrictBool = Field(True, description="Delete objects removed from the repository.")
    timeout: str = Field("5m", pattern=_DURATION)
    wait: StrictBool = Field(True, description="Wait for applied objects to become ready (health checks).")

    @field_validator("path")
    @classmethod
    def _inside_repo(cls, v: str) -> str:
        if ".." in v.split("/"):
            raise ValueError(f"flux.path {shown(v)} must stay inside the repository (no '..')")
        return v


def _checked(value: str, problem: str | None) -> str:
    if problem:
        raise ValueError(problem)
    return value


class Settings(_Model):
    """settings.yaml: the one file a person edits."""

    cluster: Cluster = Cluster()
    queue: Queue = Queue()
    agents: Agents = Agents()
    scaling: Scaling = Scaling()
    gitea: Gitea = Gitea()
    flux: Flux = Flux()

    @model_validator(mode="after")
    def _redis_in_namespace(self) -> Settings:
        # An in-cluster address names its namespace; a mismatch means KEDA and the agents
        # look for Redis where it is not.
        checked = [("queue.redisAddress", self.queue.redis_address)]
        if self.queue.mode == "sentinel":
            checked += [("queue.sentinel.addresses", a) for a in self.queue.sentinel.addresses.split(",")]
        for key, address in checked:
            parts = address.rsplit(":", 1)[0].split(".")
            if len(parts) >= 3 and parts[2] == "svc" and parts[1] != self.cluster.namespace:
                raise CrossFieldError(
                    f"{key} ({address}) points at namespace {parts[1]!r} "
                    f"but cluster.namespace is {self.cluster.namespace!r}",
                    key, "cluster.namespace",
                )
        return self

    @model_validator(mode="after")
    def _agent_fits_a_node(self) -> Settings:
        # An agent never spans nodes: 24 CPU never fits 20-CPU nodes, whatever their total.
        a, n = self.agents, self.cluster.nodes
        for kind, need, have in (("cpu", a.cpu, n.cpu), ("memory", a.memory, n.memory)):
            if parse_quantity(need) > parse_quantity(have):
                raise CrossFieldError(
                    f"agents.{kind} ({need}) is more than one node offers: cluster.nodes.{kind} ({have}); "
                    "an agent runs on one node, never across several",
                    f"agents.{kind}", f"cluster.nodes.{kind}",
                )
        if a.gpus > n.gpus:
            raise CrossFieldError(
                f"agents.gpus ({a.gpus}) is more than one node has: cluster.nodes.gpus ({n.gpus}); "
                "GPU agents run only where GPUs are",
                "agents.gpus", "cluster.nodes.gpus",
            )
        return self

    @model_validator(mode="after")
    def _fits_capacity(self) -> Settings:
        n = self.agents.max_replicas
        cap = self.cluster.capacity
        need_cpu = parse_quantity(self.agents.cpu) * n
        if need_cpu > parse_quantity(cap.cpu):
            raise CrossFieldError(
                f"agents.maxReplicas ({n}) x agents.cpu ({self.agents.cpu}) = {format_cpu(need_cpu)} CPU "
                f"exceeds cluster.capacity.cpu ({cap.cpu})",
                "agents.maxReplicas", "agents.cpu", "cluster.capacity.cpu",
            )
        need_mem = parse_quantity(self.agents.memory) * n
        if need_mem > parse_quantity(cap.memory):
            raise CrossFieldError(
                f"agents.maxReplicas ({n}) x agents.memory ({self.agents.memory}) = {format_bytes(need_mem)} "
                f"exceeds cluster.capacity.memory ({cap.memory})",
                "agents.maxReplicas", "agents.memory", "cluster.capacity.memory",
            )
        return self

    @model_validator(mode="after")
    def _fits_nodes(self) -> Settings:
        # Node by node, not only in total: three 20-CPU nodes hold nine 6-CPU agents, not ten.
        a, n = self.agents, self.cluster.nodes
        per_node = [(parse_quantity(n.cpu) // parse_quantity(a.cpu),
                     f"agents.cpu ({a.cpu}) in cluster.nodes.cpu ({n.cpu})"),
                    (parse_quantity(n.memory) // parse_quantity(a.memory),
                     f"agents.memory ({a.memory}) in cluster.nodes.memory ({n.memory})")]
        if a.gpus:
            per_node.append((Decimal(n.gpus // a.gpus), f"agents.gpus ({a.gpus}) in cluster.nodes.gpus ({n.gpus})"))
        fit, why = min(per_node, key=lambda x: x[0])
        slots = int(fit) * n.count
        if a.max_replicas > slots:
            raise CrossFieldError(
                f"agents.maxReplicas ({a.max_replicas}) agents do not fit the nodes: one node holds {int(fit)} "
                f"({why}), cluster.nodes.count ({n.count}) nodes hold {slots}",
                "agents.maxReplicas", "cluster.nodes.count",
            )
        return self

    # -- views ------------------------------------------------------------------------------

    def data(self) -> dict[str, Any]:
        """The settings as plain data with camelCase keys (what settings.yaml holds)."""
        return self.model_dump(mode="json", by_alias=True)

    def hash(self) -> str:
        """A stable hash of the values (not the comments): what agents report they run."""
        canonical = json.dumps(self.data(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def get(self, key: str) -> Any:
        node: Any = self.data()
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise SettingsError(f"unknown setting {shown(key)}", hint=did_you_mean(key[:200]))
            node = node[part]
        return node


# ---------------------------------------------------------------------------------------------
# Keys


def all_keys() -> list[str]:
    """Every settable leaf key, dotted and camelCase (``agents.maxReplicas``)."""
    out: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = prefix + (field.alias or name)
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, key + ".")
            else:
                out.append(key)

    walk(Settings, "")
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
# Validation with readable, located messages


def _loc_to_key(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    return ".".join(parts)


def _found(value: Any) -> str | None:
    """The rejected value as a problem shows it: short, and never a whole hostile value."""
    if value is None or isinstance(value, (dict, list, tuple)):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and len(str(value)) > 40:
        return f"a number of {len(str(value))} digits"
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else shown(value)


def problems_from_validation(exc: ValidationError, file: str, lines: dict[str, int] | None = None,
                             touched: Iterable[str] = ()) -> list[Problem]:
    """Located problems from a validation error. A cross-field rule is reported on the setting
    the caller changed (``touched``, e.g. the keys of `set`), else on the first it names."""
    touched = list(touched)
    problems: list[Problem] = []
    for err in exc.errors():
        key = _loc_to_key(err["loc"])
        msg = err["msg"]
        found = _found(err.get("input"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
            cause = (err.get("ctx") or {}).get("error")
            fields = getattr(cause, "fields", ())
            if fields:
                key = next((f for f in touched if f in fields), fields[0])
                found = None  # the message itself shows every value involved
        if err["type"] == "extra_forbidden":
            msg = "unknown setting; " + did_you_mean(key[:200])
            found = None
        line = None
        if lines:
            probe = key
            while probe and probe not in lines:
                probe = probe.rpartition(".")[0]
            line = lines.get(probe)
        problems.append(Problem(file=file, field=key or "(root)", message=msg, line=line, found=found))
    return problems


def validate_data(data: Any, file: str = SETTINGS_FILE, lines: dict[str, int] | None = None,
                  touched: Iterable[str] = ()) -> Settings:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"{file}: the top level must be a mapping of sections (cluster, queue, agents, ...)")
    try:
        # By the camelCase names only: the Python names (max_replicas) are for code, and a file
        # using them would pass here while `set` edits the camelCase key beside it.
        return Settings.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        problems = problems_from_validation(exc, file, lines, touched)
        raise SettingsError(
            f"{file} is not valid:\n" + "\n".join("  " + p.format() for p in problems),
            problems=problems,
            hint="fix the fields listed above; `raibid gitops schema` prints the full schema",
        ) from exc


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


def defaults() -> Settings:
    return Settings()


def json_schema() -> dict[str, Any]:
    schema = Settings.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://raibid-ci.dev/schemas/settings.schema.json"
    schema["title"] = "raibid-ci settings.yaml"
    return schema


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
    current = Settings().get(key)  # raises with a hint for unknown keys
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
    shape = Nodes()
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
