"""`python -m benchmarks`: the runner's machinery on one tiny benchmark (no figure is judged)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fixtures_gitops import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))

import run_all


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_all, "BENCHMARKS", (
        run_all.Benchmark("startup", "startup.py", ("--runs", "1"), ("--runs", "1")),
        run_all.Benchmark("broken", "startup.py", ("--no-such-flag",), ("--no-such-flag",)),
        run_all.Benchmark("stacky", "startup.py", ("--runs", "1"), ("--runs", "1"), stack=True),
    ))
    monkeypatch.setattr(run_all, "stack_built", lambda: False)
    monkeypatch.setattr(run_all, "compile_bytecode", lambda: None)


def test_short_mode_writes_one_table(tiny: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "RESULTS.md"
    assert run_all.main(["--out", str(out)]) == 0
    text = out.read_text()
    assert text in capsys.readouterr().out  # the same table is printed
    assert text.startswith("# Benchmark results")
    assert "short mode" in text and "cores" in text and "memory" in text and "Python" in text
    assert "| figure | ours | baseline (same run) | ratio | target |" in text
    assert "| raibid --help |" in text and "| raibid gitops --help |" in text and "(python -c pass)" in text
    assert "broken (startup.py): failed (exit 2)" in text
    assert "stacky (startup.py): skipped, the local stack is not built" in text


def test_unknown_name_refused(tiny: None) -> None:
    with pytest.raises(SystemExit):
        run_all.main(["--only", "nope", "--no-write"])
