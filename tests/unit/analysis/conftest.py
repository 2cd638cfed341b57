"""Fixtures: the synthetic run directory of ``synthetic.py``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def load_synthetic() -> ModuleType:
    """Import ``synthetic.py`` beside this file (shared with the CLI tests)."""
    name = "otelflow_tests_synthetic_run"
    mod = sys.modules.get(name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("synthetic.py"))
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def synthetic() -> ModuleType:
    return load_synthetic()


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def run_dir(runs_dir: Path, synthetic: ModuleType) -> Path:
    return synthetic.write_run(runs_dir)
