"""The settings rules a type and a range cannot say: quantities, ports, Gitea's and git's
names, and the rules over several settings (capacity, packing, namespaces).

Written once, as plain functions, and used by both validators: the pydantic model
(:mod:`.model`, the validator of record, which words every refusal) and the certifier
(:mod:`.certify`, the fast path that only ever says "valid" or "not sure"). The registries at
the end say which class and field each rule belongs to; ``tests/test_settings_certify.py``
checks that the model declares exactly these.

The cross-field rules take any object with the settings' attribute names: a pydantic model
while it validates, or a :mod:`.views` object.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from raibid_gitops import names
from raibid_gitops.errors import shown
from raibid_gitops.quantities import format_bytes, format_cpu, parse_quantity

#: claimIdleSeconds must exceed this many heartbeats, so a live agent that misses a
#: couple of heartbeats (GC pause, slow Redis) is not mistaken for a dead one.
CLAIM_HEARTBEAT_FACTOR = 3
#: Most nodes a config describes: far more DGX Sparks than one rack holds, and a bound on the
#: arithmetic of the fit check.
MAX_NODES = 64
#: Sentinels one address list may name: three is the usual set, five the most anyone runs.
MAX_SENTINEL_ADDRESSES = 5
#: Steps of one pipeline (agents.defaultPipeline, a repository's .raibid.yml).
MAX_STEPS = 100


class CrossFieldError(ValueError):
    """A rule over several settings; ``fields`` names them, the one to blame first."""

    def __init__(self, message: str, *fields: str) -> None:
        super().__init__(message)
        self.fields = fields


# ---------------------------------------------------------------------------------------------
# One field


def quantity(kind: str) -> Callable[[Any], str]:
    """A positive Kubernetes quantity, written as a number (``2``) or a string (``"2"``, ``4Gi``).

    The text is kept exactly: no stripping, so ``" 2"`` or ``"2\\n"`` is refused here rather
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


def ports_in_range(v: str) -> str:
    """Every ``host:port`` of a comma-separated list (the pattern admitted the digits)."""
    for part in v.split(","):
        port = int(part.rsplit(":", 1)[1])
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not between 1 and 65535")
    return v


def no_trailing_slash(v: str) -> str:
    return v.rstrip("/")


def _checked(value: str, problem: str | None) -> str:
    if problem:
        raise ValueError(problem)
    return value


# Gitea's and git's own rules beyond the character set (the patterns stay for editors).
def gitea_owner(v: str) -> str:
    return _checked(v, names.owner_problem(v))


def gitea_repo(v: str) -> str:
    return _checked(v, names.repo_name_problem(v))


def gitea_branch(v: str) -> str:
    return _checked(v, names.branch_problem(v))


def inside_repo(v: str) -> str:
    if ".." in v.split("/"):
        raise ValueError(f"flux.path {shown(v)} must stay inside the repository (no '..')")
    return v


# ---------------------------------------------------------------------------------------------
# Several fields


def nodes_default_from_capacity(data: Any) -> Any:
    """A settings.yaml written before ``cluster.nodes`` existed described one node by its
    capacity; it keeps meaning exactly that (runs on the raw ``cluster`` mapping)."""
    if isinstance(data, dict) and "nodes" not in data and isinstance(data.get("capacity"), dict):
        cap = data["capacity"]
        data = {**data, "nodes": {k: cap[k] for k in ("cpu", "memory") if k in cap}}
    return data


def capacity_within_nodes(cluster: Any) -> None:
    n, cap = cluster.nodes, cluster.capacity
    for kind, fmt in (("cpu", format_cpu), ("memory", format_bytes)):
        total = parse_quantity(getattr(n, kind)) * n.count
        if parse_quantity(getattr(cap, kind)) > total:
            raise CrossFieldError(
                f"cluster.capacity.{kind} ({getattr(cap, kind)}) exceeds what the nodes offer: "
                f"cluster.nodes.count ({n.count}) x cluster.nodes.{kind} ({getattr(n, kind)}) = {fmt(total)}",
                f"cluster.capacity.{kind}", "cluster.nodes.count", f"cluster.nodes.{kind}",
            )


def ack_le_replicas(sentinel: Any) -> None:
    if sentinel.ack_replicas > sentinel.replicas:
        raise CrossFieldError(
            f"queue.sentinel.ackReplicas ({sentinel.ack_replicas}) must not exceed queue.sentinel.replicas "
            f"({sentinel.replicas}): no write could ever be confirmed",
            "queue.sentinel.ackReplicas", "queue.sentinel.replicas",
        )


def queue_names_distinct(queue: Any) -> None:
    if queue.stream == queue.dead_letter_stream:
        raise CrossFieldError("queue.deadLetterStream must differ from queue.stream",
                              "queue.deadLetterStream", "queue.stream")
    if queue.claim_idle_seconds < CLAIM_HEARTBEAT_FACTOR * queue.heartbeat_seconds:
        raise CrossFieldError(
            f"queue.claimIdleSeconds ({queue.claim_idle_seconds}) must be at least "
            f"{CLAIM_HEARTBEAT_FACTOR} x queue.heartbeatSeconds ({queue.heartbeat_seconds}) = "
            f"{CLAIM_HEARTBEAT_FACTOR * queue.heartbeat_seconds}, or live agents' jobs get taken over",
            "queue.claimIdleSeconds", "queue.heartbeatSeconds",
        )


def min_le_max(agents: Any) -> None:
    if agents.min_replicas > agents.max_replicas:
        raise CrossFieldError(
            f"agents.minReplicas ({agents.min_replicas}) must not exceed agents.maxReplicas ({agents.max_replicas})",
            "agents.minReplicas", "agents.maxReplicas",
        )


def redis_in_namespace(s: Any) -> None:
    # An in-cluster address names its namespace; a mismatch means KEDA and the agents
    # look for Redis where it is not.
    checked = [("queue.redisAddress", s.queue.redis_address)]
    if s.queue.mode == "sentinel":
        checked += [("queue.sentinel.addresses", a) for a in s.queue.sentinel.addresses.split(",")]
    for key, address in checked:
        parts = address.rsplit(":", 1)[0].split(".")
        if len(parts) >= 3 and parts[2] == "svc" and parts[1] != s.cluster.namespace:
            raise CrossFieldError(
                f"{key} ({address}) points at namespace {parts[1]!r} "
                f"but cluster.namespace is {s.cluster.namespace!r}",
                key, "cluster.namespace",
            )


def agent_fits_a_node(s: Any) -> None:
    # An agent never spans nodes: 24 CPU never fits 20-CPU nodes, whatever their total.
    a, n = s.agents, s.cluster.nodes
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


def fits_capacity(s: Any) -> None:
    n = s.agents.max_replicas
    for resource, show in (("cpu", lambda q: f"{format_cpu(q)} CPU"), ("memory", format_bytes)):
        each, cap = getattr(s.agents, resource), getattr(s.cluster.capacity, resource)
        need = parse_quantity(each) * n
        if need > parse_quantity(cap):
            raise CrossFieldError(
                f"agents.maxReplicas ({n}) x agents.{resource} ({each}) = {show(need)} "
                f"exceeds cluster.capacity.{resource} ({cap})",
                "agents.maxReplicas", f"agents.{resource}", f"cluster.capacity.{resource}",
            )


def fits_nodes(s: Any) -> None:
    # Node by node, not only in total: three 20-CPU nodes hold nine 6-CPU agents, not ten.
    a, n = s.agents, s.cluster.nodes
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


# ---------------------------------------------------------------------------------------------
# Which rule belongs where: (class name, camelCase field) and class name, as the JSON schema
# names them. Order within a list is the order the model runs them in.

FIELD_BEFORE: dict[tuple[str, str], Callable[[Any], Any]] = {
    ("Capacity", "cpu"): quantity("cluster.capacity.cpu"),
    ("Capacity", "memory"): quantity("cluster.capacity.memory"),
    ("Nodes", "cpu"): quantity("cluster.nodes.cpu"),
    ("Nodes", "memory"): quantity("cluster.nodes.memory"),
    ("Agents", "cpu"): quantity("agents.cpu"),
    ("Agents", "memory"): quantity("agents.memory"),
}
FIELD_AFTER: dict[tuple[str, str], Callable[[Any], Any]] = {
    ("Sentinel", "addresses"): ports_in_range,
    ("Queue", "redisAddress"): ports_in_range,
    ("Gitea", "url"): no_trailing_slash,
    ("Gitea", "owner"): gitea_owner,
    ("Gitea", "repo"): gitea_repo,
    ("Gitea", "branch"): gitea_branch,
    ("Flux", "path"): inside_repo,
}
MODEL_BEFORE: dict[str, Callable[[Any], Any]] = {
    "Cluster": nodes_default_from_capacity,
}
MODEL_AFTER: dict[str, tuple[Callable[[Any], None], ...]] = {
    "Cluster": (capacity_within_nodes,),
    "Sentinel": (ack_le_replicas,),
    "Queue": (queue_names_distinct,),
    "Agents": (min_le_max,),
    "Settings": (redis_in_namespace, agent_fits_a_node, fits_capacity, fits_nodes),
}
