"""`--debug` (or RAIBID_DEBUG=1): the traceback behind a user-facing error, with the library
error kept as its cause; without it, one clean message and no traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def _closed_port_kubeconfig(tmp_path: Path) -> Path:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return path


def _status(tmp_path: Path, *pre: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raibid_gitops.cli", *pre, "gitops", "status", "--kubeconfig",
                           str(_closed_port_kubeconfig(tmp_path))], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "RAIBID_DEBUG": "", **(env or {})}, timeout=120)


def test_without_debug_one_message_and_no_traceback(tmp_path: Path) -> None:
    proc = _status(tmp_path)
    assert proc.returncode == 2 and "cannot reach the Kubernetes API" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_debug_shows_the_traceback_and_the_library_cause(tmp_path: Path) -> None:
    for proc in (_status(tmp_path, "--debug"), _status(tmp_path, env={"RAIBID_DEBUG": "1"})):
        assert proc.returncode == 2
        assert "Traceback" in proc.stderr and "raibid_gitops.errors.KubeError" in proc.stderr
        # The urllib3 error behind it is kept as the cause, not hidden.
        assert "The above exception was the direct cause of the following exception" in proc.stderr
        assert "urllib3" in proc.stderr
        assert proc.stderr.rstrip().splitlines()[-2].startswith("error: cannot reach the Kubernetes API")
