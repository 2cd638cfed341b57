"""The report's numbers, checked against the synthetic run's hand-computed answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otelflow.analysis.reader import open_run
from otelflow.analysis.report import build_report, format_duration, format_report, stats

approx = pytest.approx


def test_stats_are_exact_with_linear_interpolation() -> None:
    s = stats([5, 1, 3.5, 2, 4, 0.5])
    assert s == {
        "count": 6,
        "total": 16,
        "mean": approx(16 / 6),
        "min": 0.5,
        "max": 5,
        "p50": 2.75,
        "p95": approx(4.75),
    }
    assert stats([]) == {"count": 0, "total": 0.0, "mean": None, "min": None, "max": None, "p50": None, "p95": None}
    assert stats([7])["p95"] == 7


def test_counts_by_state(run_dir: Path) -> None:
    r = build_report(open_run(run_dir))
    assert r["tasks"] == {
        "total": 7,
        "created": 0,
        "resolved": 0,
        "submitted": 0,
        "queued": 0,
        "running": 0,
        "completed": 5,
        "failed": 1,
        "canceled": 0,
        "incomplete": 1,
    }


def test_timings(run_dir: Path) -> None:
    r = build_report(open_run(run_dir))
    # Execution of the six tasks that started and ended: 2, 3.5, 4, .5, 1, 5.
    assert r["duration_s"] == {
        "count": 6,
        "total": 16,
        "mean": approx(16 / 6),
        "min": 0.5,
        "max": 5,
        "p50": 2.75,
        "p95": approx(4.75),
    }
    # Created → Resolved for all seven: 0, 0, 4, 8, 0, 2.5, 8.
    assert r["dependency_wait_s"] == {
        "count": 7,
        "total": 22.5,
        "mean": approx(22.5 / 7),
        "min": 0,
        "max": 8,
        "p50": 2.5,
        "p95": 8,
    }
    # Resolved → Started: 1, .5, 1, .5, 1, .5, .5.
    assert r["scheduling_wait_s"] == {
        "count": 7,
        "total": 5,
        "mean": approx(5 / 7),
        "min": 0.5,
        "max": 1,
        "p50": 0.5,
        "p95": 1,
    }


def test_run_header(run_dir: Path, synthetic) -> None:
    r = build_report(open_run(run_dir))["run"]
    assert r["run_id"] == "run-a"
    assert r["duration_s"] == 20
    assert r["trace_id"] == synthetic.TRACE_ID
    assert r["files"] == ["main-host-100.jsonl", "worker-host-200.jsonl"]
    assert r["torn_lines"] == 1
    assert r["bad_lines"] == 0
    # 8 session/workflow/block + 21 created/resolved/submitted + 1 queued + 7 started
    # + 6 terminal + 4 resource/log/user events; 7 task + 1 block + 2 workflow + 1 session spans.
    assert r["lines"] == {"event": 47, "span": 11, "metric": 1}


def test_workflows_and_blocks(run_dir: Path) -> None:
    r = build_report(open_run(run_dir))
    wa, wb = r["workflows"]["wf-a"], r["workflows"]["wf-b"]
    assert list(r["workflows"]) == ["wf-a", "wf-b"]  # by start time
    assert (wa["name"], wa["status"], wa["duration_s"]) == ("etl", "completed", 10)
    assert wa["tasks"]["total"] == 4 and wa["tasks"]["completed"] == 3 and wa["tasks"]["failed"] == 1
    assert (wa["execution_s"], wa["dependency_wait_s"], wa["scheduling_wait_s"]) == (10, 12, 3)
    assert (wb["name"], wb["duration_s"]) == ("train", 10)
    assert wb["tasks"]["total"] == 3 and wb["tasks"]["incomplete"] == 1
    assert (wb["execution_s"], wb["dependency_wait_s"], wb["scheduling_wait_s"]) == (6, 10.5, 2)
    blk = r["blocks"]["blk-1"]
    assert (blk["name"], blk["workflow_id"], blk["duration_s"]) == ("extract", "wf-a", 4)
    assert blk["tasks"]["total"] == 2
    assert (blk["execution_s"], blk["dependency_wait_s"], blk["scheduling_wait_s"]) == (5.5, 0, 1.5)


def test_by_task_name_workers_failures_slowest(run_dir: Path) -> None:
    r = build_report(open_run(run_dir))
    load = r["by_task_name"]["load"]
    assert load["tasks"]["total"] == 2
    assert load["duration_s"]["mean"] == 2.75
    assert load["scheduling_wait_s"]["total"] == 1.5
    assert r["by_task_name"]["eval"]["duration_s"]["count"] == 0
    assert r["workers"] == {"w1": {"tasks": 4, "busy_s": 7.0}, "w2": {"tasks": 3, "busy_s": 9.0}}
    f = r["failures"]
    assert f["count"] == 1 and f["by_error_type"] == {"ValueError": 1}
    assert f["tasks"][0]["task_id"] == "a4"
    assert f["tasks"][0]["error_message"] == "bad row 7"
    assert [s["task_id"] for s in r["slowest"]] == ["b2", "a3", "a2", "a1", "b1", "a4"]
    assert r["slowest"][0]["worker"] == "w2"
    assert build_report(open_run(run_dir), top=2)["slowest"][1]["task_id"] == "a3"


def test_critical_path_summary_and_events(run_dir: Path) -> None:
    r = build_report(open_run(run_dir))
    cp = r["critical_path"]
    assert [s["task_id"] for s in cp["steps"]] == ["a2", "a3", "b1", "b2"]
    assert cp["length_s"] == 18
    assert r["events"]["ml.Checkpoint"] == 1
    assert r["events"]["TaskStarted"] == 7
    assert r["resources"]["node:host"] == {
        "samples": 2,
        "cpu_utilization": {"mean": approx(0.7), "max": 0.9},
        "memory_utilization": {"mean": 0.5, "max": 0.75},
    }
    assert r["dropped"] == {"events": 0}
    json.dumps(r)  # JSON-ready


def _strip(run_dir: Path, drop: str) -> None:
    """Remove one kind of line from every file of the run."""
    for f in run_dir.glob("*.jsonl"):
        kept = []
        for line in f.read_text().splitlines(keepends=True):
            try:
                section = json.loads(line).get("section")
            except json.JSONDecodeError:
                section = None
            if section != drop:
                kept.append(line)
        f.write_text("".join(kept))


@pytest.mark.parametrize("drop", ["span", "event"])
def test_same_numbers_from_events_only_or_spans_only(run_dir: Path, drop: str) -> None:
    _strip(run_dir, drop)
    r = build_report(open_run(run_dir))
    assert r["tasks"]["completed"] == 5 and r["tasks"]["failed"] == 1
    assert r["duration_s"]["total"] == 16
    assert r["dependency_wait_s"]["total"] == 22.5
    assert r["scheduling_wait_s"]["total"] == 5
    assert r["critical_path"]["length_s"] == 18
    assert r["workflows"]["wf-a"]["name"] == "etl"
    assert r["failures"]["tasks"][0]["error_type"] == "ValueError"
    # Without spans, b3 is known only to have started; with spans, it is incomplete.
    assert r["tasks"]["running" if drop == "span" else "incomplete"] == 1


def test_task_records(run_dir: Path) -> None:
    tasks = open_run(run_dir).tasks()
    b1 = tasks["b1"]
    assert b1.state == "completed"
    assert b1.worker == "w1"  # from the worker's file
    assert b1.workflow_name == "train"
    assert b1.depends_on == ("a3",)
    assert b1.queued is not None
    assert b1.cpu_time_s == 0.25
    b3 = tasks["b3"]
    assert b3.state == "incomplete"
    assert b3.ended is None and b3.execution_s is None
    assert tasks["a4"].error_type == "ValueError"
    assert tasks["a1"].block_name == "extract"


def test_format_report(run_dir: Path) -> None:
    text = format_report(build_report(open_run(run_dir)))
    assert text.startswith("Run run-a  (synthetic, completed)")
    assert "1 torn last line(s) skipped" in text
    assert "Tasks: 7 — 5 completed, 1 failed, 1 incomplete" in text
    assert "execution            6  16.000s   2.667s   2.750s  4.750s  5.000s" in text
    assert "etl    wf-a  completed  10.000s      4       1  10.000s" in text
    assert "a4 (check) ValueError: bad row 7" in text
    assert "Critical path: 4 tasks, 18.000s" in text
    assert text.endswith("\n")


def test_format_duration() -> None:
    assert [format_duration(v) for v in (None, 0, 5e-5, 0.0125, 3.25, 123.5, 3720)] == [
        "-",
        "0s",
        "50µs",
        "12.5ms",
        "3.250s",
        "2m03.5s",
        "1h02m",
    ]


def test_empty_run(tmp_path: Path) -> None:
    d = tmp_path / "empty-run"
    d.mkdir()
    (d / "main-h-1.jsonl").write_text("")
    r = build_report(open_run(d))
    assert r["tasks"]["total"] == 0
    assert r["critical_path"] is None
    assert "Critical path: no task ended." in format_report(r)
