"""The rest of a cluster around kube-apiserver: kube-controller-manager, kube-scheduler and KWOK
nodes shaped like a DGX Spark, plus a default StorageClass.

With these, what a user's cluster does happens here too: Jobs get Pods, Pods are scheduled onto
a node with room, Deployments and StatefulSets become Available, PVCs bind, namespaces finish
deleting and garbage collection runs. KWOK (the Kubernetes SIG's simulator for nodes and pods)
plays the kubelet's part in status only: a scheduled Pod becomes Running and Ready through its
Stage objects; no container runs.

Except for agent Pods (label ``app.kubernetes.io/name=raibid-agent``): those become Running but
not Ready, since their readiness is the agent's ``/readyz`` and no agent runs in them. A test that
runs the agent for a Pod plays the kubelet's prober and marks the Pod Ready itself (see
:func:`mark_ready`), as the real kubelet does once the probe passes. KEDA counts the agent Jobs
whose Pods are not Ready as pending (``pendingPodConditions``), so this is what it would see.
"""

from __future__ import annotations

import json
import re
import ssl
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from raibid_gitops import contract
from raibid_gitops.devstack import versions
from raibid_gitops.devstack.processes import (
    DEFAULT_TIMEOUT,
    KubeStack,
    Process,
    StackNotBuilt,
    _http_ok,
    binary,
    free_port,
    wait_until,
)

#: The annotation KWOK is told to manage nodes by; nodes without it are left alone.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
#: Controllers that need a cloud or bootstrap tokens are of no use here.
CONTROLLERS = "*,-bootstrapsigner,-tokencleaner,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller"
#: The StorageClass k3s ships as default is `local-path`; the stack's plays the same part with
#: the controller-manager's host-path provisioner (for tests only, as its documentation says).
STORAGE_CLASS = "local-path"


@dataclass(frozen=True)
class NodeShape:
    """A node's size, by default one DGX Spark: 20 Arm cores, 128 GiB unified memory, one GPU."""

    cpu: str = "20"
    memory: str = "128Gi"
    gpus: int = 1
    arch: str = "arm64"
    pods: int = 110


DGX_SPARK = NodeShape()


def _kube_component(name: str, kube: KubeStack, logs: Path, extra: list[str | Path]) -> tuple[Process, str]:
    """Start kube-controller-manager or kube-scheduler; returns the process and its /healthz URL.

    Each serves HTTPS on its own free port (a self-signed cert in its cert dir); /healthz is
    always allowed without credentials (``--authorization-always-allow-paths`` default).
    """
    port = free_port()
    cert_dir = kube.workdir / "kube" / f"{name}-certs"
    cert_dir.mkdir(parents=True, exist_ok=True)
    proc = Process.start(name, [
        binary(name),
        "--kubeconfig", kube.kubeconfig,
        "--authentication-kubeconfig", kube.kubeconfig,
        "--authorization-kubeconfig", kube.kubeconfig,
        "--leader-elect=false",
        "--bind-address", "127.0.0.1", "--secure-port", str(port), "--cert-dir", cert_dir,
        "--v", "1",
        *extra,
    ], logs=logs)
    return proc, f"https://127.0.0.1:{port}/healthz"


def start_control_plane(kube: KubeStack, *, timeout: float = DEFAULT_TIMEOUT) -> list[Process]:
    """kube-controller-manager and kube-scheduler against ``kube``; waits for both /healthz."""
    logs = kube.workdir / "logs"
    started: list[Process] = []
    cm, cm_health = _kube_component("kube-controller-manager", kube, logs, [
        "--controllers", CONTROLLERS,
        # Service-account tokens are signed with the apiserver's key and carry its CA.
        "--service-account-private-key-file", kube.workdir / "kube" / "sa.key",
        "--root-ca-file", kube.ca_file,
        "--use-service-account-credentials=false",
        # PVCs of the default StorageClass get host-path PVs (Redis's StatefulSet has one).
        "--enable-hostpath-provisioner",
        "--cluster-cidr", "10.244.0.0/16", "--allocate-node-cidrs=false",
        # A node whose lease KWOK stops renewing is marked NotReady after this long.
        "--node-monitor-grace-period", "40s",
        # Volume provisioning and binding in detail: a PVC that stays Pending is the usual
        # reason a StatefulSet never becomes Ready here, and --v 1 says nothing about it.
        "--vmodule", "pv_controller*=3,host_path*=3,provision*=3",
    ])
    started.append(cm)
    sched, sched_health = _kube_component("kube-scheduler", kube, logs, [])
    started.append(sched)
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # their self-signed serving certs; loopback only
    for proc, url in ((cm, cm_health), (sched, sched_health)):
        wait_until(f"{proc.name} /healthz", partial(_http_ok, url, context=insecure),
                   watch=started, timeout=timeout)
    return started


def start_kwok(kube: KubeStack, *, timeout: float = DEFAULT_TIMEOUT) -> Process:
    """The KWOK controller, managing nodes annotated ``kwok.x-k8s.io/node=fake`` with the
    Stage objects collected by the build (node-initialize, pod-ready, pod-delete)."""
    stages = versions.kwok_stages_dir()
    if not (stages / ".complete").exists():
        raise StackNotBuilt(f"stack not built: KWOK stages missing from {stages}", hint="run `raibid-devstack build`")
    kube.kubectl("apply", "--server-side", "-f", str(stages))
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(_probed_pod_stages(stages)))
    logs = kube.workdir / "logs"
    proc = Process.start("kwok", [
        binary("kwok"),
        "--kubeconfig", kube.kubeconfig,
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
        "--enable-crds=Stage",
        "--node-ip", "127.0.0.1",
        "--cidr", "10.244.0.1/24",
        "--node-lease-duration-seconds", "40",
    ], logs=logs, env=kube.env())
    return proc


#: Pods whose readiness a test decides (it runs their process and its readiness probe).
PROBED_POD_LABEL = ("app.kubernetes.io/name", contract.AGENT_NAME)


def _probed_pod_stages(stages: Path) -> dict[str, object]:
    """KWOK's pod-ready Stage split in two: probed Pods left out of it, and a copy for them that
    makes them Running with Ready and ContainersReady False (and their containers not ready)."""
    from ruamel.yaml import YAML

    ready = YAML(typ="safe").load((stages / "pod-ready.yaml").read_text())
    key, value = PROBED_POD_LABEL
    label_key = f'.metadata.labels["{key}"]'
    ready["spec"]["selector"]["matchExpressions"].append({"key": label_key, "operator": "NotIn", "values": [value]})
    probed = json.loads(json.dumps(ready))
    probed["metadata"] = {"name": "pod-started-not-ready"}
    probed["spec"]["selector"]["matchExpressions"][-1]["operator"] = "In"
    template = probed["spec"]["next"]["statusTemplate"]
    template, n = re.subn(r'status: "True"(\s+)type: (Ready|ContainersReady)\b', r'status: "False"\1type: \2', template)
    head, sep, tail = template.partition("initContainerStatuses:")
    head, m = re.subn(r"\bready: true\b", "ready: false", head)
    if n != 2 or m != 1 or not sep:  # KWOK's template changed shape: say so rather than mis-simulate
        raise StackNotBuilt(f"KWOK's pod-ready stage in {stages} is not the one this stack knows how to adapt",
                            hint="check KWOK's version in raibid_gitops/devstack/versions.py")
    probed["spec"]["next"]["statusTemplate"] = head + sep + tail
    return {"apiVersion": "v1", "kind": "List", "items": [ready, probed]}


def mark_ready(kube: KubeStack, namespace: str, pod: str) -> None:
    """What the kubelet does when a Pod's readiness probe passes: Ready and ContainersReady True."""
    obj = json.loads(kube.kubectl("get", "pod", pod, "-n", namespace, "-o", "json"))
    status = obj.get("status") or {}
    conditions = [dict(c, status="True") if c.get("type") in ("Ready", "ContainersReady") else c
                  for c in status.get("conditions") or []]
    containers = [dict(c, ready=True) for c in status.get("containerStatuses") or []]
    kube.kubectl("patch", "pod", pod, "-n", namespace, "--subresource=status", "--type=merge", "-p",
                 json.dumps({"status": {"conditions": conditions, "containerStatuses": containers}}))


def add_node(kube: KubeStack, name: str, shape: NodeShape = DGX_SPARK, *, timeout: float = DEFAULT_TIMEOUT,
             watch: tuple[Process, ...] = ()) -> None:
    """Create a KWOK node with ``shape``'s capacity and wait until it is Ready."""
    capacity = {"cpu": shape.cpu, "memory": shape.memory, "pods": str(shape.pods)}
    if shape.gpus:
        capacity["nvidia.com/gpu"] = str(shape.gpus)
    node = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/arch": shape.arch, "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
                "type": "kwok",
                **({"nvidia.com/gpu.present": "true"} if shape.gpus else {}),
            },
        },
        "status": {"capacity": capacity, "allocatable": capacity,
                   "nodeInfo": {"architecture": shape.arch, "operatingSystem": "linux",
                                "kubeletVersion": "fake", "kubeProxyVersion": "fake"}},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(node))

    def ready() -> bool:
        obj = json.loads(kube.kubectl("get", "node", name, "-o", "json"))
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (obj.get("status") or {}).get("conditions") or [])

    wait_until(f"node {name} Ready", ready, watch=watch or kube.processes, timeout=timeout)


def ensure_storage_class(kube: KubeStack) -> None:
    """A default StorageClass backed by the controller-manager's host-path provisioner."""
    kube.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS,
                     "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "kubernetes.io/host-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }))
