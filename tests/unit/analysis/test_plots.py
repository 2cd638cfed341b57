"""Plots: a PNG is written; the series behind it are right; a clear error without matplotlib."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path
from typing import Any

import pytest

from otelflow.analysis.plots import PlotDependencyError, concurrency, plot_run, timeline_lanes
from otelflow.analysis.reader import open_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("by", "kind"), [("worker", "both"), ("workflow", "timeline"), ("worker", "concurrency")])
def test_plot_writes_a_png(run_dir: Path, tmp_path: Path, by: str, kind: str) -> None:
    pytest.importorskip("matplotlib")
    out = plot_run(open_run(run_dir), tmp_path / "out.png", by=by, kind=kind)
    assert out == tmp_path / "out.png"
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 5000


def test_plot_caps_the_tasks_drawn(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = plot_run(open_run(run_dir).tasks(), tmp_path / "few.png", max_tasks=2)
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_plot_does_not_touch_pyplot_state(run_dir: Path, tmp_path: Path) -> None:
    mpl = pytest.importorskip("matplotlib")
    backend = mpl.get_backend()
    plot_run(open_run(run_dir), tmp_path / "x.png")
    assert mpl.get_backend() == backend
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_bad_arguments(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="by must be"):
        plot_run(open_run(run_dir), tmp_path / "x.png", by="node")
    with pytest.raises(ValueError, match="kind must be"):
        plot_run(open_run(run_dir), tmp_path / "x.png", kind="pie")


def test_missing_matplotlib_names_the_extra(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(PlotDependencyError, match=r"pip install 'otelflow\[plots\]'") as info:
        plot_run(open_run(run_dir), tmp_path / "x.png")
    assert isinstance(info.value, ImportError)
    assert not (tmp_path / "x.png").exists()


def test_concurrency_series(run_dir: Path) -> None:
    times, running, waiting = concurrency(open_run(run_dir))
    at = dict(zip(times, zip(running, waiting, strict=True), strict=True))
    # 0 s: a1 and a2 ready; 0.5 s a2 starts; 1 s a1 starts; 3 s a1 ends; 4 s a2 ends, a3 ready.
    assert at[0.0] == (0, 2)
    assert at[0.5] == (1, 1)
    assert at[1.0] == (2, 0)
    assert at[3.0] == (1, 0)
    assert at[4.0] == (0, 1)
    assert at[18.5] == (1, 0)  # b3 starts and never ends…
    assert at[20.0] == (0, 0)  # …counted until the last time seen
    assert max(running) == 2


def test_timeline_lanes(run_dir: Path) -> None:
    run = open_run(run_dir)
    groups, lane_of = timeline_lanes(run, by="worker")
    assert groups == [("w2", 1), ("w1", 1)]  # a2 (w2) started first; one task at a time each
    assert lane_of["a2"] == 0 and lane_of["a1"] == 1
    groups, lane_of = timeline_lanes(run, by="workflow")
    # Bars run from ready to end: a1 and a2 overlap (two sub-lanes), b1 → b2 → b3 do not.
    assert groups == [("etl [wf-a]", 2), ("train [wf-b]", 1)]
    assert (lane_of["a1"], lane_of["a2"], lane_of["a3"], lane_of["b3"]) == (0, 1, 0, 2)
    with pytest.raises(ValueError):
        timeline_lanes(run, by="node")
