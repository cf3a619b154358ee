"""Pinned versions of the local stack, and the cache directory keyed by them.

Every pin was chosen for the Go toolchain on the machine (go1.26): a module whose
go.mod declares a newer ``go`` line would need another toolchain download.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

#: Bump when the way a binary is built changes, so a stale cache is not reused.
BUILD_RECIPE = 3


@dataclass(frozen=True)
class Component:
    name: str
    module: str
    version: str
    #: The package to build, relative import path (defaults to the module root).
    package: str = ""
    #: "wrapper" (a throwaway go.mod that requires the module) or "copy" (build in a copy
    #: of the module directory; needed when the module's own go.mod must be the main one).
    method: str = "wrapper"
    tags: str = ""
    cgo: bool = False
    #: Extra GOFLAGS for this build (KEDA ships vendor/modules.txt without vendored code,
    #: so it needs ``-mod=mod``).
    goflags: str = ""
    #: Bumped when this component's own recipe changes, so only it is rebuilt.
    build_rev: int = 0


K8S_VERSION = "v1.34.4"

#: The KEDA operator the stack runs, and whose CRDs and schemas the project ships.
KEDA_VERSION = "v2.21.0"

COMPONENTS: tuple[Component, ...] = (
    Component("kustomize", "sigs.k8s.io/kustomize/kustomize/v5", "v5.7.1"),
    Component("etcd", "go.etcd.io/etcd/server/v3", "v3.6.16"),
    Component("kube-apiserver", "k8s.io/kubernetes", K8S_VERSION, package="cmd/kube-apiserver"),
    # Same module and wrapper as the apiserver, so most of the build cache is shared: Jobs
    # get Pods, namespaces finish deleting, Pods get scheduled onto the KWOK node.
    Component("kube-controller-manager", "k8s.io/kubernetes", K8S_VERSION, package="cmd/kube-controller-manager"),
    Component("kube-scheduler", "k8s.io/kubernetes", K8S_VERSION, package="cmd/kube-scheduler"),
    # The Kubernetes SIG's node/pod simulator: scheduled Pods become Running without kubelets.
    # v0.7.0 declares go 1.24 and every dependency resolves on the proxy.
    Component("kwok", "sigs.k8s.io/kwok", "v0.7.0", package="cmd/kwok"),
    # v1.9.6 needs github.com/fluxcd/pkg/artifact v0.18.3, which the proxy refuses (403);
    # v1.9.0 pins v0.18.0, which is served.
    Component("source-controller", "github.com/fluxcd/source-controller", "v1.9.0"),
    Component("kustomize-controller", "github.com/fluxcd/kustomize-controller", "v1.9.6"),
    # Receivers (push -> reconcile) and gitea commit statuses. v1.7.x-v1.10.0 are refused by
    # the proxy (403) and v1.9.0's go.mod fails the checksum database (404): v1.6.0 is the
    # newest usable here. Checksum verification stays on.
    Component("notification-controller", "github.com/fluxcd/notification-controller", "v1.6.0"),
    # KEDA 2.16.x refuses the rendered trigger (lagCount with activationLagCount "0":
    # "activationLagCount required for Redis lag"); 2.21.0 accepts it and is served here.
    # Copy-out build: the module's go.mod must be the main one (replace lines), and its
    # vendor/modules.txt lists modules it does not vendor, hence -mod=mod.
    Component(
        "keda-operator", "github.com/kedacore/keda/v2", KEDA_VERSION, package="cmd/operator",
        method="copy", goflags="-mod=mod",
    ),
    # v1.27.3 needs gitea.dev/actions-proto-go and gitea.dev/sdk, which the proxy refuses (403).
    Component(
        "gitea", "code.gitea.io/gitea", "v1.26.0", method="copy",
        tags="sqlite sqlite_unlock_notify", cgo=True,
        # 1: main.Version set, so /api/v1/version says 1.26.0 (Flux's gitea notifier refuses
        # "development").
        build_rev=1,
    ),
)

KEDA_MODULE = ("github.com/kedacore/keda/v2", KEDA_VERSION)


def stack_key() -> str:
    data = json.dumps(
        {"recipe": BUILD_RECIPE, "components": [c.__dict__ for c in COMPONENTS], "keda": KEDA_MODULE},
        sort_keys=True,
    )
    return hashlib.sha256(data.encode()).hexdigest()[:12]


def cache_root() -> Path:
    base = os.environ.get("RAIBID_STACK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "raibid-stack"
    )
    return Path(base) / stack_key()


def bin_dir() -> Path:
    """Binaries of this version set (symlinks into ``objects_dir()``)."""
    return cache_root() / "bin"


def objects_dir() -> Path:
    """Built binaries keyed by component and version, shared by every version set, so that
    moving one pin rebuilds only that component."""
    return cache_root().parent / "objects"


def object_name(c: Component) -> str:
    rev = f".{c.build_rev}" if c.build_rev else ""
    return f"{c.name}-{c.version}-r{BUILD_RECIPE}{rev}"


def crd_dir() -> Path:
    return cache_root() / "crds"


def kwok_stages_dir() -> Path:
    return cache_root() / "kwok-stages"


def gitea_static_dir() -> Path:
    return cache_root() / "gitea-static"
