"""Run kustomize as a subprocess: the ``kustomize`` binary if on PATH, else ``kubectl kustomize``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from raibid_gitops.errors import KustomizeError

#: A build of this overlay takes well under a second; a hung build is a bug, not load.
BUILD_TIMEOUT_SECONDS = 120
#: kustomize's error output is cut to this many characters in our message.
MAX_ERROR_CHARS = 2000


def command() -> list[str]:
    explicit = os.environ.get("RAIBID_KUSTOMIZE")
    if explicit:
        if not shutil.which(explicit):
            raise KustomizeError(f"RAIBID_KUSTOMIZE={explicit} is not an executable")
        return [explicit, "build"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    raise KustomizeError(
        "neither kustomize nor kubectl is on PATH",
        hint="install kustomize (go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1) or kubectl, "
             "or set RAIBID_KUSTOMIZE to its path",
    )


def build(path: Path) -> str:
    """The rendered YAML of the kustomization at ``path``."""
    cmd = [*command(), str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise KustomizeError(f"`{' '.join(cmd)}` did not finish within {BUILD_TIMEOUT_SECONDS}s") from None
    except OSError as exc:
        raise KustomizeError(f"cannot run {cmd[0]}: {exc}") from None
    if proc.returncode != 0:
        msg = proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}"
        if len(msg) > MAX_ERROR_CHARS:  # kustomize quotes whole files in some errors
            msg = msg[:MAX_ERROR_CHARS] + f"... ({len(msg)} characters)"
        raise KustomizeError(f"kustomize build of {path} failed: {msg}")
    return proc.stdout


def parse(text: str) -> list[dict[str, Any]]:
    """Rendered YAML to plain objects (YAML 1.2 safe load, as the API server would get them;
    :mod:`raibid_gitops.yaml12` gives ruamel's result, with libyaml's speed where it can)."""
    from ruamel.yaml.error import YAMLError

    from raibid_gitops import yaml12, yamlio
    from raibid_gitops.errors import SettingsError

    try:
        docs = [d for d in yaml12.load_all(text) if d]
        # Aliases in a hand-edited patch may survive into the output: bound the expansion
        # before schemas, diffs and the ConfigMap check walk it.
        yamlio.check_bounds(docs, "kustomize output", max_nodes=yamlio.MAX_MANIFEST_NODES,
                            max_depth=yamlio.MAX_MANIFEST_DEPTH)
    except SettingsError as exc:
        raise KustomizeError(exc.message) from None
    except (YAMLError, RecursionError, ValueError) as exc:
        raise KustomizeError(f"kustomize output is not readable YAML: {str(exc).splitlines()[0][:200]}") from None
    return docs


def build_objects(path: Path) -> list[dict[str, Any]]:
    return parse(build(path))
