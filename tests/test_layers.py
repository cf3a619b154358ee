"""The layers written down in pyproject.toml ([tool.importlinter]) hold: cli -> tui ->
gitops/queue -> clients -> settings/contract/errors; the agent uses clients, settings and the
queue contract only; no product code imports the development stack. Checked by import-linter
itself, so a new import across a layer fails the suite, not a review."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports (import-linter) is not installed: pip install -e '.[test]'")
    proc = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout
