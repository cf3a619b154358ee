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


@lru_cache(maxsize=1)
def schema_json() -> str:
    """settings.schema.json: a function of the settings model alone (so made once per process)."""
    return json.dumps(settings_mod.json_schema(), indent=2, sort_keys=False) + "\n"


def generated_files(settings: Settings) -> dict[str, str]:
    """Relative path -> exact content."""
    return {layout.GPU_PATCH_PATH: gpu_patch(settings), layout.SCHEMA_PATH: schema_json()}
