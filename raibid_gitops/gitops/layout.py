"""Where things are in a config repository, and where the shipped templates are."""

from __future__ import annotations

from pathlib import Path

OVERLAY_DIR = "overlays/dgx-spark"
CLUSTER_DIR = "clusters/dgx-spark"
SETTINGS_PATH = f"{OVERLAY_DIR}/settings.yaml"
SCHEMA_PATH = f"{OVERLAY_DIR}/settings.schema.json"
GPU_PATCH_PATH = f"{OVERLAY_DIR}/agent-gpu-patch.yaml"
#: The generated kustomize Component with what depends on cluster.nodes and queue.mode: the
#: agents' spread over nodes, the KEDA trigger's connection, Redis with Sentinels.
TOPOLOGY_DIR_NAME = "topology"
TOPOLOGY_PATH = f"{OVERLAY_DIR}/{TOPOLOGY_DIR_NAME}/kustomization.yaml"
#: Top-level folders a config repository consists of (copied from the templates).
TEMPLATE_DIRS = ("base", "overlays", "clusters")
#: Flux object names in clusters/dgx-spark (the config repo's GitRepository and Kustomization).
FLUX_NAMESPACE = "flux-system"
FLUX_OBJECT_NAME = "raibid-config"
#: The Kustomization that applies clusters/dgx-spark itself (Flux manages its own objects).
FLUX_CLUSTER_OBJECT = "raibid-cluster"
FLUX_AUTH_SECRET = "raibid-config-auth"


def templates_dir() -> Path:
    """The shipped templates: the project's own base/, overlays/ and clusters/, packaged
    under raibid_gitops/templates (symlinks in a source checkout)."""
    return Path(__file__).resolve().parent.parent / "templates"


def find_repo_root(start: Path | None = None) -> Path:
    """The config repository containing ``start`` (default: the current directory)."""
    from raibid_gitops.errors import ConfigRepoError, shown

    if start is not None:
        # A given directory is taken as given: looking upwards from a path that does not
        # exist, or from a file, would quietly pick whatever repository lies above it.
        hint = "pass a directory inside a config repository (-C DIR), or create one with `raibid gitops init DIR`"
        if not start.exists():
            raise ConfigRepoError(f"{shown(str(start), 200)} does not exist", hint=hint)
        if not start.is_dir():
            raise ConfigRepoError(f"{shown(str(start), 200)} is not a directory", hint=hint)
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / SETTINGS_PATH).is_file():
            return candidate
    raise ConfigRepoError(
        f"{here} is not inside a raibid config repository (no {SETTINGS_PATH} found)",
        hint="pass the repository directory, or create one with `raibid gitops init DIR`",
    )
