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


K8S_VERSION = "v1.34.4"

COMPONENTS: tuple[Component, ...] = (
    Component("kustomize", "sigs.k8s.io/kustomize/kustomize/v5", "v5.7.1"),
    Component("etcd", "go.etcd.io/etcd/server/v3", "v3.6.16"),
    Component("kube-apiserver", "k8s.io/kubernetes", K8S_VERSION, package="cmd/kube-apiserver"),
    # v1.9.6 needs github.com/fluxcd/pkg/artifact v0.18.3, which the proxy refuses (403);
    # v1.9.0 pins v0.18.0, which is served.
    Component("source-controller", "github.com/fluxcd/source-controller", "v1.9.0"),
    Component("kustomize-controller", "github.com/fluxcd/kustomize-controller", "v1.9.6"),
    # v1.27.3 needs gitea.dev/actions-proto-go and gitea.dev/sdk, which the proxy refuses (403).
    Component(
        "gitea", "code.gitea.io/gitea", "v1.26.0", method="copy",
        tags="sqlite sqlite_unlock_notify", cgo=True,
    ),
)

#: CRDs are only downloaded, never built.
KEDA_MODULE = ("github.com/kedacore/keda/v2", "v2.16.1")


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
    return f"{c.name}-{c.version}-r{BUILD_RECIPE}"


def crd_dir() -> Path:
    return cache_root() / "crds"


def gitea_static_dir() -> Path:
    return cache_root() / "gitea-static"
