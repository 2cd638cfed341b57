"""Utilization, efficiency, concurrency and failure groups, on runs whose timings are known."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest

import otelflow
from otelflow.analysis import open_run
from otelflow.analysis.report import build_report, format_report
from otelflow.analysis.utilization import peak_concurrency, utilization
from otelflow.integrations import task_id_of
from tests.conftest import read_lines

approx = pytest.approx


def test_synthetic_run(run_dir: Path) -> None:
    u = build_report(open_run(run_dir))["utilization"]
    # Six tasks ran (b3 never ended): 16 s of execution between 0.5 s and 18 s, on w1 and w2.
    assert u["span_s"] == 17.5
    assert u["busy_s"] == 16
    assert u["worker_count"] == 2
    assert u["efficiency"] == approx(16 / (17.5 * 2))
    assert u["peak_concurrency"] == 2
    assert u["avg_concurrency"] == approx(16 / 17.5)
    assert u["workers"]["w1"] == {
        "tasks": 3,
        "busy_s": 7.0,
        "uptime_s": 17.5,
        "utilization": approx(7 / 17.5),
        "uptime_from": "tasks",
    }
    assert u["workers"]["w2"]["busy_s"] == 9.0


def test_worker_uptime_from_worker_events(run_dir: Path, synthetic: ModuleType) -> None:
    lines = [
        {"section": "event", "type": "dask.WorkerAdded", "event_time": synthetic.ns(0), "worker": "w1"},
        {"section": "event", "type": "dask.WorkerRemoved", "event_time": synthetic.ns(20), "worker": "w1"},
    ]
    with (run_dir / "scheduler-host-300.jsonl").open("w") as f:
        f.writelines(json.dumps(x) + "\n" for x in lines)
    u = build_report(open_run(run_dir))["utilization"]
    assert u["workers"]["w1"]["uptime_s"] == 20
    assert u["workers"]["w1"]["uptime_from"] == "events"
    assert u["workers"]["w2"]["uptime_from"] == "tasks"
    assert u["efficiency"] == approx(16 / (20 + 17.5))


def test_peak_concurrency_touching_intervals_do_not_overlap(synthetic: ModuleType) -> None:
    from otelflow.analysis._tables import TaskInfo

    def task(tid: str, s: int, e: int) -> TaskInfo:
        t = TaskInfo(tid)
        t.started, t.ended = s, e
        return t

    assert peak_concurrency([task("a", 0, 10), task("b", 10, 20), task("c", 5, 15)]) == (2, 5)
    assert peak_concurrency([]) == (0, None)


def _task_runs(run_dir: Path) -> list[tuple[float, float]]:
    """(TaskStarted, TaskCompleted) in seconds of every task, read from the raw span lines."""
    runs = []
    for span in read_lines(run_dir, "span"):
        if span["kind"] == "task":
            ev = dict(span["events"])
            runs.append((ev["TaskStarted"] / 1e9, ev["TaskCompleted"] / 1e9))
    return runs


def _sleep(s: float) -> float:
    time.sleep(s)
    return s


def test_pool_of_two_workers_four_equal_tasks_is_fully_efficient(tmp_path: Path) -> None:
    with otelflow.start_telemetry(checkpoint_path=tmp_path, resource_poll_interval=0, environ={}) as tel:
        with otelflow.instrument(ThreadPoolExecutor(2)) as pool, otelflow.workflow_scope("pool"):
            futures = [pool.submit(_sleep, 0.5) for _ in range(4)]
            assert [f.result() for f in futures] == [0.5] * 4
    u = utilization(open_run(tel.run_dir).data)
    assert u["worker_count"] == 2
    assert u["peak_concurrency"] == 2
    runs = _task_runs(tel.run_dir)
    busy, first, last = sum(e - s for s, e in runs), min(s for s, _ in runs), max(e for _, e in runs)
    # Exactly what the task stamps say. Ideal is 1.0 (2 s busy in 1 s on 2 workers); a pool
    # that ran one task at a time could reach 0.5 at most (busy ≤ span). The floor between
    # them leaves a loaded machine 0.67 s of stalls (2 s busy in < 1.67 s).
    assert u["efficiency"] == approx(busy / (2 * (last - first)))
    assert u["efficiency"] > 0.6
    for w in u["workers"].values():
        assert w["tasks"] == 2
        assert w["utilization"] > 0.6


def test_diamond_with_set_sleeps(tmp_path: Path) -> None:
    with otelflow.start_telemetry(checkpoint_path=tmp_path, resource_poll_interval=0, environ={}) as tel:
        with otelflow.instrument(ThreadPoolExecutor(2)) as pool, otelflow.workflow_scope("diamond"):
            a = pool.submit(_sleep, 0.2)
            b = pool.submit(lambda _x: _sleep(0.4), a)
            c = pool.submit(lambda _x: _sleep(0.1), a)
            d = pool.submit(lambda _x, _y: _sleep(0.2), b, c)
            d.result()
    r = build_report(open_run(tel.run_dir))
    assert r["tasks"]["completed"] == 4
    exe = r["duration_s"]
    assert exe["count"] == 4
    assert exe["min"] >= 0.1 and exe["max"] >= 0.4
    # Sleeps add up to 0.9 s of execution (a little more: the calls around them), and the
    # report sums exactly what the task stamps say.
    runs = _task_runs(tel.run_dir)
    busy, first, last = sum(e - s for s, e in runs), min(s for s, _ in runs), max(e for _, e in runs)
    assert exe["total"] == approx(busy) and exe["total"] >= 0.9
    path = r["critical_path"]
    assert [s["execution_s"] >= want for s, want in zip(path["steps"], (0.2, 0.4, 0.2), strict=True)] == [True] * 3
    assert path["tasks"] == 3
    # The path is a → b → d: at least their sleeps, and it is most of the run.
    assert 0.8 <= path["length_s"] <= r["run"]["duration_s"]
    u = r["utilization"]
    assert u["peak_concurrency"] == 2
    # b and c overlap for 0.1 s of the ≥ 0.8 s: efficiency ≈ 0.9 / (2 × 0.8) = 0.56. Its
    # ceiling follows from the shape (a → b → d is inside the span, c beside it), so only
    # the floor needs slack for a loaded machine's stalls.
    assert u["efficiency"] == approx(busy / (2 * (last - first)))
    path_exec = sum(step["execution_s"] for step in path["steps"])  # a, b, d run one after another
    assert 0.3 < u["efficiency"] <= busy / (2 * path_exec) + 1e-9


def _fail(kind: str) -> None:
    if kind == "value":
        raise ValueError("bad value")
    raise KeyError(kind)


def test_failures_grouped_by_type_with_an_example(tmp_path: Path) -> None:
    with otelflow.start_telemetry(checkpoint_path=tmp_path, resource_poll_interval=0, environ={}) as tel:
        with otelflow.instrument(ThreadPoolExecutor(1)) as pool:
            futures = [pool.submit(_fail, k) for k in ("value", "value", "key")]
            for f in futures:
                with pytest.raises((ValueError, KeyError)):
                    f.result()
    r = build_report(open_run(tel.run_dir))
    groups = r["failure_groups"]
    assert [(g["error_type"], g["count"]) for g in groups] == [("ValueError", 2), ("KeyError", 1)]
    assert groups[0]["task_names"] == {"_fail": 2}
    assert groups[0]["example"]["error_message"] == "bad value"
    assert groups[0]["example"]["task_id"] == task_id_of(futures[0])  # the first to fail (a pool of one)
    text = format_report(r)
    assert "Failures by type:" in text and "ValueError ×2 (_fail ×2)" in text


def test_compare_shows_utilization(run_dir: Path, runs_dir: Path, synthetic: ModuleType) -> None:
    from otelflow.analysis.compare import compare_runs, format_comparison

    other = synthetic.write_run(runs_dir, "run-b", start_offset=100)
    cmp = compare_runs(open_run(run_dir), open_run(other))
    assert cmp["utilization"]["efficiency"]["a"] == approx(16 / 35)
    assert cmp["utilization"]["efficiency"]["delta"] == approx(0)
    assert cmp["utilization"]["peak_concurrency"] == {"a": 2, "b": 2, "delta": 0, "ratio": 1}
    assert "efficiency        45.7%  45.7%" in format_comparison(cmp)
