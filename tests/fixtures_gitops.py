"""Config repositories made by `raibid gitops init` (fixtures; see conftest.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from raibid_gitops.gitops.generate import init

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def config_repo(tmp_path: Path) -> Path:
    """A fresh config repository with default settings, committed on main."""
    return init(tmp_path / "config").path


def git_state(repo: Path) -> tuple[str, str]:
    """HEAD and porcelain status: tests compare them before and after a refused change."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    return head, status


@pytest.fixture
def project_root() -> Path:
    return PROJECT_ROOT
