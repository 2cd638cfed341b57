"""``open_run(...).to_pandas()``: DataFrames whose values are the run's."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest

from otelflow.analysis import open_run
from otelflow.analysis.frame import PandasDependencyError

_TIMES = ("created", "resolved", "submitted", "queued", "started", "ended")


def test_tasks_frame_has_the_runs_times_to_the_ns(run_dir: Path) -> None:
    pd = pytest.importorskip("pandas")
    run = open_run(run_dir)
    frames = run.to_pandas()
    df = frames.tasks.set_index("task_id")
    assert len(df) == 7
    for tid, t in run.tasks().items():
        for c in _TIMES:
            v = df.at[tid, c]
            assert (None if pd.isna(v) else v.value) == getattr(t, c)
    assert df.at["b2", "execution_s"] == 5.0
    assert frames.tasks is frames.tasks  # built once
    assert frames.resources["cpu_utilization"].tolist() == [0.5, 0.9]
    assert frames.logs["message"].tolist() == ["slow"]
    assert "ml.Checkpoint" in set(frames.events["type"])


def test_without_pandas_one_sentence(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(PandasDependencyError, match=r"pip install 'otelflow\[pandas\]'"):
        open_run(run_dir).to_pandas()
