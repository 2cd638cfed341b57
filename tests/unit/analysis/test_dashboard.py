"""The PNG dashboard, at 10 tasks and at 10⁵ (aggregated, bounded drawing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelflow.analysis import open_run
from otelflow.cli.main import main

from . import big_run

pytest.importorskip("matplotlib")


def _titles(png: Path) -> None:
    assert png.read_bytes().startswith(b"\x89PNG")


def test_dashboard_10_task_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = big_run.record(tmp_path / "runs", 10, workflows=2, fail_every=4)
    out = tmp_path / "dash.png"
    assert main(["plot", str(run_dir), "--out", str(out)]) == 0
    assert f"Wrote {out} (10 tasks of run " in capsys.readouterr().out
    _titles(out)
    import matplotlib.image as mpimg

    img = mpimg.imread(str(out))
    h, w = img.shape[:2]
    assert w >= 1400 and h >= 1000  # seven panels, readable size


def test_dashboard_panels_and_aggregation(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    from otelflow.analysis.dashboard import plot_dashboard

    saved: list[Figure] = []
    real = Figure.savefig

    def keep(self: Figure, *args: object, **kwargs: object) -> None:
        saved.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    plot_dashboard(open_run(run_dir), tmp_path / "d.png")
    titles = [ax.get_title(loc="left") for ax in saved[0].axes]
    for needle in (
        "Workflow Gantt",
        "Execution time per stage per workflow",
        "Concurrency over time",
        "Completion throughput (6 tasks)",
        "End-to-end latency",
        "Stage × time occupancy",
        "Resources",
    ):
        assert any(t.startswith(needle) for t in titles), (needle, titles)
    gantt = saved[0].axes[0]
    assert [t.get_text() for t in gantt.get_yticklabels()] == ["etl", "train"]


def test_dashboard_100k_tasks_draws_aggregates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    from otelflow.analysis.dashboard import plot_dashboard

    run_dir = big_run.record(tmp_path / "runs", 100_000)
    saved: list[Figure] = []
    real = Figure.savefig

    def keep(self: Figure, *args: object, **kwargs: object) -> None:
        saved.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    out = plot_dashboard(open_run(run_dir), tmp_path / "big.png")
    _titles(out)
    shapes = sum(len(ax.patches) + len(ax.collections) + len(ax.images) for ax in saved[0].axes)
    assert shapes < 2_000  # aggregated per workflow, stage and time bin — not 10⁵ rectangles
    assert "100000 tasks, 10 workflows" in saved[0].get_suptitle()
