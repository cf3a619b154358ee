"""`raibid bootstrap` refuses bad input before it touches anything (no cluster or Gitea needed:
every case here must fail before connecting). The real runs are in test_bootstrap_stack.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from raibid_gitops.errors import ConfigRepoError
from raibid_gitops.gitops.bootstrap import PHASES, select_phases


def bootstrap(*args: str, env: dict[str, str] | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAIBID_")}
    return subprocess.run([sys.executable, "-m", "raibid_gitops.cli", "bootstrap", *args], cwd=cwd,
                          env={**base, **(env or {})}, capture_output=True, text=True, timeout=60)


class TestPhases:
    def test_selection(self) -> None:
        assert select_phases() == PHASES
        assert select_phases(only="webhook") == ("webhook",)
        assert select_phases(from_phase="objects") == ("objects", "webhook", "sync")

    @pytest.mark.parametrize("bad", ["everything", "repo\n", "REPO", "", "x" * 5000])
    def test_unknown_phases_are_refused_without_echoing_them(self, bad: str) -> None:
        with pytest.raises(ConfigRepoError) as exc:
            select_phases(only=bad) if bad else select_phases(from_phase="nope")
        assert "unknown phase" in exc.value.message and "x" * 100 not in exc.value.message


class TestRefusals:
    def test_no_token(self, tmp_path: Path) -> None:
        proc = bootstrap("--gitea-url", "http://127.0.0.1:9/", cwd=tmp_path)
        assert proc.returncode == 2 and "RAIBID_GITEA_TOKEN is not set" in proc.stderr
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("flag", ["--gitea-url", "--gitea-cluster-url", "--receiver-url"])
    def test_credentials_in_urls_are_refused_and_not_printed(self, tmp_path: Path, flag: str) -> None:
        args = ["--gitea-url", "http://127.0.0.1:9"]
        if flag == "--gitea-url":
            args = []
        proc = bootstrap(*args, flag, "http://admin:hunter2@127.0.0.1:9/", env={"RAIBID_GITEA_TOKEN": "t0k"},
                         cwd=tmp_path)
        assert proc.returncode == 2 and "carries credentials" in proc.stderr
        assert "hunter2" not in proc.stdout + proc.stderr and "t0k" not in proc.stdout + proc.stderr

    def test_from_and_only_exclude_each_other(self, tmp_path: Path) -> None:
        proc = bootstrap("--gitea-url", "http://127.0.0.1:9", "--from", "repo", "--only", "sync", cwd=tmp_path)
        assert proc.returncode == 2 and "not allowed with" in proc.stderr
