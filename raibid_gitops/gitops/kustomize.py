"""Run kustomize as a subprocess: the ``kustomize`` binary if on PATH, else ``kubectl kustomize``."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raibid_gitops.errors import KustomizeBuildFailed, KustomizeError

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


#: klog's line prefix, as `kubectl kustomize` writes its error: ``E1130 09:41:35.366212   17058 run.go:72] ``.
_KLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [\w.-]+:\d+\] ")
#: kustomize tries a resource as a file, then as a directory, and reports both attempts:
#: for a missing file the second repeats the first's cause ...
_AS_DIRECTORY_TOO = "': must build at directory: not a valid directory: "
#: ... and for a directory the first only says it is not a file.
_NOT_A_FILE = re.compile(r"accumulation err='(accumulating resources from '[^']*'): '[^']*' must resolve to a file': "
                         r"recursed accumulation of path '[^']*': ")


def _unquote_go(text: str) -> str:
    """A Go-quoted string (klog's ``err="..."``) as its text."""
    import json

    try:
        value = json.loads(text)
        return value if isinstance(value, str) else text
    except ValueError:
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")


def _strip_wrapper(text: str) -> str:
    """kustomize's message without kubectl's klog wrapper or kustomize's ``Error: `` prefix."""
    lines = text.strip().splitlines()
    if lines and _KLOG.match(lines[0]):
        first = _KLOG.sub("", lines[0])
        m = re.fullmatch(r'"command failed" err=(".*")', first)
        if m:  # one line: err="..."
            text = _unquote_go(m.group(1))
        elif first.startswith('"command failed" err=<'):  # several lines: err=<\n\t...\n >
            body = [ln[1:] if ln.startswith("\t") else ln for ln in lines[1:] if ln.strip() != ">"]
            text = "\n".join(body)
        else:
            text = "\n".join([first, *lines[1:]])
    text = text.strip()
    for prefix in ("Error: ", "error: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text


def _one_cause(text: str) -> str:
    """kustomize's "accumulation err='AS A FILE': AS A DIRECTORY" says the cause twice (a
    missing file), or beside a failure that does not matter (a directory is not a file):
    keep the cause once."""
    cut = text.rfind(_AS_DIRECTORY_TOO)
    if cut >= 0:
        repeated = text[cut + len(_AS_DIRECTORY_TOO):]
        opening = text.rfind("accumulation err='", 0, cut)
        if repeated and repeated in text[:cut] and opening >= 0:
            text = text[:opening] + text[opening + len("accumulation err='"):cut]
    text = _NOT_A_FILE.sub(r"\1: ", text)
    return text.replace("accumulating resources: accumulating resources from", "accumulating resources from")


def clean_error(text: str, root: Path | None = None) -> str:
    """kustomize's error as a person should read it: once, without a log prefix, with paths
    inside ``root`` relative to it."""
    text = _one_cause(_strip_wrapper(text))
    if root is not None:
        base = str(root.resolve())
        text = text.replace(base + os.sep, "").replace(f"'{base}'", "'.'")
    # One line: verify prints one problem per line (kustomize quotes YAML in some errors).
    return " ".join(text.split())


@dataclass
class Running:
    """A started ``kustomize build`` (see :func:`start`)."""

    cmd: list[str]
    path: Path
    started: float
    proc: subprocess.Popen[str] | None = None
    error: KustomizeError | None = None
    #: The config repository: paths inside it are shown relative to it in an error.
    root: Path | None = None


def start(path: Path, cmd: list[str] | None = None, *, root: Path | None = None) -> Running:
    """Start ``kustomize build path`` and return at once; :func:`wait` gives its output. Builds
    of several directories run concurrently this way."""
    try:
        cmd = [*(cmd if cmd is not None else command()), str(path)]
    except KustomizeError as exc:
        return Running([], path, time.monotonic(), error=exc, root=root)
    run = Running(cmd, path, time.monotonic(), root=root)
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
    except subprocess.TimeoutExpired as exc:
        kill(run)
        raise KustomizeError(f"`{' '.join(run.cmd)}` did not finish within {BUILD_TIMEOUT_SECONDS}s") from exc
    if run.proc.returncode != 0:
        msg = clean_error(stderr.strip() or stdout.strip() or f"exit code {run.proc.returncode}", run.root)
        if len(msg) > MAX_ERROR_CHARS:  # kustomize quotes whole files in some errors
            msg = msg[:MAX_ERROR_CHARS] + f"... ({len(msg)} characters)"
        shown_path = run.path
        if run.root is not None:
            with contextlib.suppress(ValueError):
                shown_path = run.path.resolve().relative_to(run.root.resolve())
        raise KustomizeBuildFailed(f"kustomize build of {shown_path} failed: {msg}", detail=msg)
    return stdout


def kill(run: Running) -> None:
    if run.proc is not None and run.proc.poll() is None:
        run.proc.kill()
        run.proc.communicate()


def build(path: Path, *, root: Path | None = None) -> str:
    """The rendered YAML of the kustomization at ``path``. In an error, paths inside ``root``
    (the config repository) are shown relative to it."""
    return wait(start(path, root=root))


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
        raise KustomizeError(exc.message) from exc
    except (YAMLError, RecursionError, ValueError) as exc:
        raise KustomizeError(f"kustomize output is not readable YAML: {str(exc).splitlines()[0][:200]}") from exc
    return docs


def build_objects(path: Path, *, root: Path | None = None) -> list[dict[str, Any]]:
    return parse(build(path, root=root))
