"""Fixtures shared by the analysis and CLI tests: a synthetic run directory."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.analysis import synthetic as synthetic_run


@pytest.fixture
def synthetic() -> ModuleType:
    """``tests/unit/analysis/synthetic.py``: writes a run whose numbers are known."""
    return synthetic_run


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def run_dir(runs_dir: Path, synthetic: ModuleType) -> Path:
    return synthetic.write_run(runs_dir)
