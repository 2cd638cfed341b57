"""CLI tests run with the runs directory as $OTELFLOW_RUNS_DIR and the cwd in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runs directory, also set as $OTELFLOW_RUNS_DIR; the cwd is moved to tmp_path."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("OTELFLOW_RUNS_DIR", str(runs))
    monkeypatch.chdir(tmp_path)
    return runs
