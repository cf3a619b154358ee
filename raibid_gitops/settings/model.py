"""The pydantic model of ``settings.yaml``: the validator of record and the source of the JSON
schema.

Every refusal is worded here: all the problems of a file at once, each at its field. The
fast path (:mod:`.certify`) accepts only what this model accepts and hands everything else
here, so a valid file never pays for pydantic's import and model build (about 110 ms) and an
invalid one is told exactly what it was always told. Imported only on that slow path, by
``raibid gitops schema`` and by the agent's pipeline model.

The shipped ``settings.schema.json`` is :func:`json_schema` written out;
``python -m raibid_gitops.settings.model`` writes it again after a change here, and
``tests/test_settings_certify.py`` fails while it is stale.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from raibid_gitops.errors import SettingsError, shown
from raibid_gitops.problems import Problem
from raibid_gitops.settings import did_you_mean, rules
from raibid_gitops.settings.rules import MAX_NODES, MAX_SENTINEL_ADDRESSES, MAX_STEPS

# Patterns of string settings. pydantic runs them with Rust's regex engine, where ``$`` is
# the end of the text (no trailing newline slips through), and they go into the JSON schema
# for editors, whose ECMAScript ``$`` means the same.
_K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DURATION = r"^([0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h)){1,4}$"
_STREAM = r"^[A-Za-z0-9:_.\-{}]+$"
#: Redis keys and group names stay short: they are repeated in every entry's metadata.
_STREAM_MAX = 200


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True,
        validate_default=True,
    )

    # The rules of rules.py, looked up by class and field: one registry for this model and the
    # certifier, so neither can have a rule the other lacks. A field rule's refusal is located
    # at its field, a model rule's at its section, as pydantic locates any refusal.

    @field_validator("*", mode="before")
    @classmethod
    def _field_before(cls, v: Any, info: ValidationInfo) -> Any:
        rule = rules.FIELD_BEFORE.get((cls.__name__, to_camel(info.field_name or "")))
        return rule(v) if rule else v

    @field_validator("*", mode="after")
    @classmethod
    def _field_after(cls, v: Any, info: ValidationInfo) -> Any:
        rule = rules.FIELD_AFTER.get((cls.__name__, to_camel(info.field_name or "")))
        return rule(v) if rule else v

    @model_validator(mode="before")
    @classmethod
    def _model_before(cls, data: Any) -> Any:
        rule = rules.MODEL_BEFORE.get(cls.__name__)
        return rule(data) if rule else data

    @model_validator(mode="after")
    def _model_after(self) -> Self:
        for rule in rules.MODEL_AFTER.get(type(self).__name__, ()):
            rule(self)
        return self


class Capacity(_Model):
    """What raibid-ci may use of the node: the agents' total must fit."""

    cpu: str = Field("20", description="CPU cores available to agents (DGX Spark: 20 Arm cores).")
    memory: str = Field("128Gi", description="Memory available to agents (DGX Spark: 128 GiB unified).")


class Nodes(_Model):
    """The nodes agents run on: how many, and what ONE of them offers agents (all alike: a
    cluster of DGX Sparks). An agent never spans nodes, so one agent must fit one node, and
    all agents must fit the nodes one by one (packing), not only in total."""

    count: StrictInt = Field(1, ge=1, le=MAX_NODES, description="Nodes agents may run on.")
    cpu: str = Field("20", description="CPU cores one node offers agents (DGX Spark: 20 Arm cores).")
    memory: str = Field("128Gi", description="Memory one node offers agents (DGX Spark: 128 GiB unified).")
    gpus: StrictInt = Field(1, ge=0, le=8, description="nvidia.com/gpu one node offers (DGX Spark: 1).")


class Cluster(_Model):
    namespace: str = Field("raibid-ci", pattern=_K8S_NAME, max_length=63,
                           description="Namespace of the raibid-ci stack.")
    nodes: Nodes = Field(Nodes(), description="The nodes agents run on. Left out: one node of cluster.capacity "
                                              "(what a settings.yaml from before several nodes meant).")
    capacity: Capacity = Capacity()


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


class Step(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\- ]{1,64}$")
    #: A shell script; 64 KiB is far more than a step needs and bounds what a job record carries.
    run: str = Field(min_length=1, max_length=65536)
    timeout_seconds: StrictInt = Field(1800, ge=1, le=86400)


class Pipeline(BaseModel):
    """A repository's ``.raibid.yml``: the steps it asks for (the agent's, not settings.yaml's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: tuple[Step, ...] = Field(min_length=1, max_length=MAX_STEPS)


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
        (Step(name="test", run="make test", timeout_seconds=1800),), max_length=MAX_STEPS,
        description="Steps run when a repository has no .raibid.yml.",
    )


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



class Flux(_Model):
    interval: str = Field("1m", pattern=_DURATION, description="How often Flux fetches and applies.")
    path: str = Field("./overlays/dgx-spark", pattern=r"^\./[A-Za-z0-9_./\-]*$", max_length=255)
    prune: StrictBool = Field(True, description="Delete objects removed from the repository.")
    timeout: str = Field("5m", pattern=_DURATION)
    wait: StrictBool = Field(True, description="Wait for applied objects to become ready (health checks).")


class Settings(_Model):
    """settings.yaml: the one file a person edits."""

    cluster: Cluster = Cluster()
    queue: Queue = Queue()
    agents: Agents = Agents()
    scaling: Scaling = Scaling()
    gitea: Gitea = Gitea()
    flux: Flux = Flux()

    def data(self) -> dict[str, Any]:
        """The settings as plain data with camelCase keys (what settings.yaml holds)."""
        return self.model_dump(mode="json", by_alias=True)


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


def validate(data: dict[str, Any], file: str, lines: dict[str, int] | None = None,
             touched: Iterable[str] = ()) -> Settings:
    """The model of ``data``, or SettingsError with every problem located."""
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


#: Where the schema ships (read by the certifier and written by ``raibid gitops init``/``set``).
SCHEMA_PATH = Path(__file__).with_name("settings.schema.json")


def json_schema() -> dict[str, Any]:
    schema = Settings.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://raibid-ci.dev/schemas/settings.schema.json"
    schema["title"] = "raibid-ci settings.yaml"
    return schema


def schema_text() -> str:
    """The schema file's exact text."""
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":  # pragma: no cover - a maintainer's command, checked by the test
    SCHEMA_PATH.write_text(schema_text(), encoding="utf-8")
    sys.stdout.write(f"wrote {SCHEMA_PATH}\n")
