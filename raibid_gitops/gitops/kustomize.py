"""Run kustomize as a subprocess: the ``kustomize`` binary if on PATH, else ``kubectl kustomize``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
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


@dataclass
class Running:
    """A started ``kustomize build`` (see :func:`start`)."""

    cmd: list[str]
    path: Path
    started: float
    proc: subprocess.Popen[str] | None = None
    error: KustomizeError | None = None


def start(path: Path, cmd: list[str] | None = None) -> Running:
    """Start ``kustomize build path`` and return at once; :func:`wait` gives its output. Builds
    of several directories run concurrently this way."""
    try:
        cmd = [*(cmd if cmd is not None else command()), str(path)]
    except KustomizeError as exc:
        return Running([], path, time.monotonic(), error=exc)
    run = Running(cmd, path, time.monotonic())
    try:
        run.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
    except OSError as exc:
        run.error = KustomizeError(f"cannot run {cmd[0]}: {exc}")
    return run


def wait(run: Running) -> str:
    """The rendered YAML of a started build; KustomizeError if it failed or timed out."""
    if run.error is not None:
        raise run.error
    assert run.proc is not None
    remaining = max(0.0, BUILD_TIMEOUT_SECONDS - (time.monotonic() - run.started))
    try:
        stdout, stderr = run.proc.communicate(timeout=remaining)
    except subprocess.TimeoutExpired:
        kill(run)
        raise KustomizeError(f"`{' '.join(run.cmd)}` did not finish within {BUILD_TIMEOUT_SECONDS}s") from None
    if run.proc.returncode != 0:
        msg = stderr.strip() or stdout.strip() or f"exit code {run.proc.returncode}"
        if len(msg) > MAX_ERROR_CHARS:  # kustomize quotes whole files in some errors
            msg = msg[:MAX_ERROR_CHARS] + f"... ({len(msg)} characters)"
        raise KustomizeError(f"kustomize build of {run.path} failed: {msg}")
    return stdout


def kill(run: Running) -> None:
    if run.proc is not None and run.proc.poll() is None:
        run.proc.kill()
        run.proc.communicate()


def build(path: Path) -> str:
    """The rendered YAML of the kustomization at ``path``."""
    return wait(start(path))


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
