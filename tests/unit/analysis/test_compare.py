"""Comparing two runs: deltas are B − A."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from otelflow.analysis.compare import compare_runs, format_comparison
from otelflow.analysis.reader import open_run
from otelflow.analysis.report import build_report


@pytest.fixture
def run_b(runs_dir: Path, synthetic: ModuleType) -> Path:
    """Only the "etl" workflow, and a1 takes 1 s longer (ends at 4 s, not 3 s)."""
    tasks = {k: v for k, v in synthetic.TASKS.items() if v[1] == "wf-a"}
    a1 = list(tasks["a1"])
    a1[8] = 4
    tasks["a1"] = tuple(a1)
    return synthetic.write_run(runs_dir, "run-b", tasks=tasks, start_offset=100)


def test_deltas(run_dir: Path, run_b: Path) -> None:
    cmp = compare_runs(open_run(run_dir), open_run(run_b))
    assert cmp["a"]["run_id"] == "run-a" and cmp["b"]["run_id"] == "run-b"
    assert cmp["tasks"]["total"] == {"a": 7, "b": 4, "delta": -3, "ratio": pytest.approx(4 / 7)}
    assert cmp["tasks"]["incomplete"]["delta"] == -1
    # Execution: A 2, 3.5, 4, .5, 1, 5 (16 s); B 3, 3.5, 4, .5 (11 s).
    total = cmp["timings"]["duration_s"]["total"]
    assert (total["a"], total["b"], total["delta"]) == (16, 11, -5)
    assert cmp["timings"]["duration_s"]["max"]["delta"] == -1
    load = cmp["by_task_name"]["load"]
    assert (load["mean_s"]["a"], load["mean_s"]["b"], load["mean_s"]["delta"]) == (2.75, 3.25, 0.5)
    assert load["count"]["delta"] == 0
    assert cmp["by_task_name"]["fit"]["count"] == {"a": 1, "b": None, "delta": None, "ratio": None}
    assert cmp["only_in_a"] == ["eval", "fit", "prep"]
    assert cmp["only_in_b"] == []
    # Critical path: A 18 s (to b2); B ends with a4 at 10 s.
    assert (cmp["critical_path_s"]["a"], cmp["critical_path_s"]["b"]) == (18, 10)
    assert cmp["by_workflow_name"]["train"]["count"] == {"a": 1, "b": None, "delta": None, "ratio": None}
    assert cmp["by_workflow_name"]["etl"]["execution_s"]["delta"] == 1


def test_compare_accepts_reports_and_a_run_with_itself_has_zero_deltas(run_dir: Path) -> None:
    report = build_report(open_run(run_dir))
    cmp = compare_runs(report, open_run(run_dir))
    assert cmp["wall_s"]["delta"] == 0
    assert all(row["delta"] == 0 for row in cmp["tasks"].values())
    assert all(r["delta"] in (0, None) for t in cmp["timings"].values() for r in t.values())


def test_format_comparison(run_dir: Path, run_b: Path) -> None:
    text = format_comparison(compare_runs(open_run(run_dir), open_run(run_b)))
    assert "Deltas are B − A." in text
    flat = " ".join(text.split())
    assert "execution total 16.000s 11.000s -5.000s -31.2%" in flat
    assert "load 2 2 2.750s 3.250s +500.0ms +18.2% +1.000s" in flat
    assert "train 1 - 10.000s - - gone" in flat
    assert "Only in A: eval, fit, prep" in text
