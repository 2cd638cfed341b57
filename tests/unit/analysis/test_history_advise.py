"""``history`` (regressions against the median of earlier runs) and ``advise`` (p95 requests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otelflow.analysis.advise import advise
from otelflow.analysis.history import history
from otelflow.cli.main import main

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
MIB = 1024 * 1024


def _run(runs: Path, run_id: str, start_s: float, wf_durations: dict[str, float], failed: int = 0) -> Path:
    """A finished run whose run.json summary has the given workflow durations."""
    d = runs / run_id
    d.mkdir(parents=True)
    total = sum(wf_durations.values())
    wfs = {
        f"wf-{run_id}-{i}": {"name": n, "status": "completed", "duration_s": v, "tasks": {"completed": 10, "failed": 0}}
        for i, (n, v) in enumerate(wf_durations.items())
    }
    meta = {
        "run_id": run_id,
        "start_time": T0 + int(start_s * S),
        "end_time": T0 + int((start_s + total) * S),
        "status": "completed",
        "summary": {"tasks": {"created": 10 * len(wfs), "completed": 10 * len(wfs) - failed, "failed": failed},
                    "workflows": wfs},
    }  # fmt: skip
    (d / "run.json").write_text(json.dumps(meta))
    (d / "main-host-1.jsonl").write_text("")
    return d


def test_history_flags_a_regression_against_the_median_of_earlier_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for i, dur in enumerate([10.0, 11.0, 9.0, 10.5, 14.0]):
        _run(runs, f"r{i}", i * 100, {"etl": dur}, failed=i == 4)
    h = history(runs)
    rows = {r["run_id"]: r for r in h["runs"]}
    assert [r["run_id"] for r in h["runs"]] == ["r0", "r1", "r2", "r3", "r4"]
    assert rows["r0"]["baseline_s"] is None and rows["r1"]["baseline_s"] is None  # too few earlier runs
    assert rows["r2"]["baseline_s"] == 10.5  # median of 10, 11
    assert rows["r4"]["baseline_s"] == pytest.approx(10.25)  # median of 10, 11, 9, 10.5
    assert rows["r4"]["change_pct"] == pytest.approx((14 / 10.25 - 1) * 100)
    assert h["regressions"] == ["r4"]
    assert rows["r4"]["failed"] == 1


def test_history_by_workflow_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    for i, (a, b) in enumerate([(5, 1), (5, 1), (5, 1), (5, 3)]):
        _run(runs, f"r{i}", i * 100, {"etl": a, "train": b})
    h = history(runs, name="train")
    assert [r["duration_s"] for r in h["runs"]] == [1, 1, 1, 3]
    assert h["regressions"] == ["r3"]
    assert history(runs, name="etl")["regressions"] == []
    assert main(["history", str(runs), "--name", "train"]) == 0
    out = capsys.readouterr().out
    assert "r3" in out and "REGRESSED" in out and "+200.0%" in out


def _run_with_measured_tasks(runs: Path, run_id: str, cpu_cores: list[float], rss_mib: list[int]) -> None:
    """A run of "fit" tasks, each 2 s of execution using the given cores and peak RSS."""
    d = runs / run_id
    d.mkdir(parents=True)
    lines = []
    for i, (c, m) in enumerate(zip(cpu_cores, rss_mib, strict=True)):
        tid = f"{run_id}-t{i}"
        base = {"section": "event", "task_id": tid, "task_name": "fit"}
        lines.append({**base, "type": "TaskCreated", "event_time": T0 + i * S})
        lines.append({**base, "type": "TaskStarted", "event_time": T0 + i * S})
        lines.append(
            {**base, "type": "TaskCompleted", "event_time": T0 + (i + 2) * S, "cpu_time_s": 2 * c,
             "peak_rss_bytes": m * MIB}
        )  # fmt: skip
    (d / "worker-host-1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (d / "run.json").write_text(json.dumps({"run_id": run_id, "start_time": T0 + len(list(runs.iterdir())) * S}))


def test_advise_recommends_from_the_p95_with_headroom(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    _run_with_measured_tasks(runs, "a", [0.5, 0.6, 0.7, 0.8, 0.9], [100, 110, 120, 130, 140])
    _run_with_measured_tasks(runs, "b", [1.0, 1.1, 1.2, 1.3, 1.4], [150, 160, 170, 180, 500])
    adv = advise(runs)["tasks"]["fit"]
    cores = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4]
    p95 = cores[8] + (cores[9] - cores[8]) * 0.55  # rank 0.95 × 9 = 8.55
    assert adv["runs"] == 2 and adv["tasks"] == 10
    assert adv["cpu_p95_cores"] == pytest.approx(p95)
    assert adv["cpu_request_cores"] == 1.7  # 1.355 × 1.2 = 1.626, up to a tenth
    assert adv["peak_rss_bytes"] == 500 * MIB
    assert adv["memory_request_bytes"] == 600 * MIB
    assert main(["advise", str(runs), "--task", "fit"]) == 0
    assert "fit: request 1.7 CPU, 600 MiB memory" in capsys.readouterr().out


def test_advise_refuses_on_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    _run_with_measured_tasks(runs, "a", [0.5] * 20, [100] * 20)
    adv = advise(runs)["tasks"]["fit"]
    assert "cpu_request_cores" not in adv
    assert adv["refused"] == "Not enough data: 1 run(s) with measured 'fit' tasks; at least 2 are needed."
    assert main(["advise", str(runs)]) == 1
    assert "Not enough data" in capsys.readouterr().out
