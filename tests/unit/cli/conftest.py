"""Fixtures: the synthetic run directory of ``tests/unit/analysis/synthetic.py``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def load_synthetic() -> ModuleType:
    name = "otelflow_tests_synthetic_run"
    mod = sys.modules.get(name)
    if mod is None:
        path = Path(__file__).parents[1] / "analysis" / "synthetic.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def synthetic() -> ModuleType:
    return load_synthetic()


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runs directory, also set as $OTELFLOW_RUNS_DIR; the cwd is moved to tmp_path."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("OTELFLOW_RUNS_DIR", str(runs))
    monkeypatch.chdir(tmp_path)
    return runs


@pytest.fixture
def run_dir(runs_dir: Path, synthetic: ModuleType) -> Path:
    return synthetic.write_run(runs_dir)
