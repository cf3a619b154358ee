"""Files of the config repository that are generated whole from settings (not hand-edited)."""

from __future__ import annotations

import json
from functools import lru_cache

from raibid_gitops import settings as settings_mod
from raibid_gitops.gitops import layout
from raibid_gitops.settings import Settings

_GPU_HEADER = (
    "# Generated from agents.gpus by raibid-gitops; do not edit. With no GPUs this patch\n"
    "# only tests its target, so the kustomization stays the same for any GPU count.\n"
)


def gpu_patch(settings: Settings) -> str:
    gpus = settings.agents.gpus
    if gpus == 0:
        return _GPU_HEADER + "- op: test\n  path: /kind\n  value: ScaledJob\n"
    # The NVIDIA runtime class exposes the GPU to the container; the device plugin's
    # resource makes the scheduler count it.
    return (
        _GPU_HEADER
        + "- op: add\n  path: /spec/jobTargetRef/template/spec/runtimeClassName\n  value: nvidia\n"
        + "- op: add\n  path: /spec/jobTargetRef/template/spec/containers/0/resources/requests/nvidia.com~1gpu\n"
        + f'  value: "{gpus}" # {{"$raibid": "agents.gpus"}}\n'
        + "- op: add\n  path: /spec/jobTargetRef/template/spec/containers/0/resources/limits/nvidia.com~1gpu\n"
        + f'  value: "{gpus}" # {{"$raibid": "agents.gpus"}}\n'
    )


_TOPOLOGY_HEADER = (
    "# Generated from cluster.nodes and queue.* in settings.yaml by raibid-gitops; do not edit\n"
    "# (`raibid gitops set` rewrites it, `raibid gitops verify` checks it). Included by the\n"
    "# overlay's kustomization.yaml as the component `topology`.\n"
    "apiVersion: kustomize.config.k8s.io/v1alpha1\n"
    "kind: Component\n"
)
#: The Sentinel manifests, relative to the generated component's directory.
SENTINEL_COMPONENT = "../../../base/redis-sentinel"
#: StatefulSets of queue.mode sentinel, and their container that needs the master's name.
_SENTINEL_SETS = (("raibid-redis", "redis"), ("raibid-redis-replica", "redis"), ("raibid-redis-sentinel", "sentinel"))


def _q(value: object) -> str:
    """A YAML scalar, double-quoted (JSON's escapes are YAML's): never misread, never markup."""
    return json.dumps(str(value))


def topology_component(settings: Settings) -> str:
    """The overlay's `topology` component: what depends on cluster.nodes and queue.mode.

    - several nodes: the agents' Pods spread over them (a soft topology spread constraint: a
      burst still schedules where there is room; kube-scheduler's resource fit does the rest);
    - the KEDA trigger's connection: Redis itself (single), or the Sentinels with the
      redis-sentinel-streams scaler (sentinel), which also brings base/redis-sentinel."""
    q = settings.queue
    parts: list[str] = []
    patches: list[str] = []
    if q.mode == "sentinel":
        parts.append(f"components:\n  - {SENTINEL_COMPONENT}\n")
        patches.append(_patch(
            "ScaledJob", "raibid-agent",
            "KEDA finds the primary through the Sentinels (queue.mode: sentinel).",
            [("replace", "/spec/triggers/0/type", _q("redis-sentinel-streams")),
             ("replace", "/spec/triggers/0/metadata/address", _q(q.sentinel.addresses)),
             ("add", "/spec/triggers/0/metadata/sentinelMaster", _q(q.sentinel.master_name))]))
        patches.append(_patch(
            "StatefulSet", "raibid-redis-replica", "queue.sentinel.replicas",
            [("replace", "/spec/replicas", str(q.sentinel.replicas))]))
        for name, container in _SENTINEL_SETS:
            patches.append(
                f"  # queue.sentinel.masterName\n  - patch: |-\n"
                f"      apiVersion: apps/v1\n      kind: StatefulSet\n      metadata:\n        name: {name}\n"
                f"      spec:\n        template:\n          spec:\n            containers:\n"
                f"              - name: {container}\n                env:\n"
                "                  - name: RAIBID_MASTER_NAME\n"
                f"                    value: {_q(q.sentinel.master_name)}\n")
    else:
        patches.append(_patch(
            "ScaledJob", "raibid-agent", "KEDA reaches Redis itself (queue.mode: single).",
            [("replace", "/spec/triggers/0/metadata/address", _q(q.redis_address))]))
    if settings.cluster.nodes.count > 1:
        patches.append(_patch(
            "ScaledJob", "raibid-agent",
            f"Agents spread over the {settings.cluster.nodes.count} nodes (cluster.nodes.count).",
            [("add", "/spec/jobTargetRef/template/spec/topologySpreadConstraints",
              "\n  - maxSkew: 1\n    topologyKey: kubernetes.io/hostname\n    whenUnsatisfiable: ScheduleAnyway\n"
              "    labelSelector:\n      matchLabels:\n        app.kubernetes.io/name: raibid-agent")]))
    return _TOPOLOGY_HEADER + "".join(parts) + "patches:\n" + "".join(patches)


def _patch(kind: str, name: str, comment: str, ops: list[tuple[str, str, str]]) -> str:
    """One inline JSON patch on ``kind``/``name``; each op's value is YAML text (a multi-line
    value starts with a newline and is indented below ``value:``)."""
    lines = [f"  # {comment}", "  - target:", f"      kind: {kind}", f"      name: {name}", "    patch: |-"]
    for op, path, value in ops:
        lines += [f"      - op: {op}", f"        path: {path}"]
        if value.startswith("\n"):
            lines.append("        value:")
            lines += ["        " + v for v in value[1:].splitlines()]
        else:
            lines.append(f"        value: {value}")
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=1)
def schema_json() -> str:
    """settings.schema.json: a function of the settings model alone, shipped written out."""
    return settings_mod.schema_text()


def generated_files(settings: Settings) -> dict[str, str]:
    """Relative path -> exact content."""
    return {layout.GPU_PATCH_PATH: gpu_patch(settings), layout.SCHEMA_PATH: schema_json(),
            layout.TOPOLOGY_PATH: topology_component(settings)}
