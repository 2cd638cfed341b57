"""The critical path: the chain of last-finishing dependencies, and its time split."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelflow.analysis._tables import TaskInfo
from otelflow.analysis.critical_path import critical_path, format_critical_path
from otelflow.analysis.reader import open_run

S = 1_000_000_000


def _task(
    tid: str, created: float, resolved: float, started: float | None, ended: float | None, deps: tuple[str, ...] = ()
) -> TaskInfo:
    t = TaskInfo(tid)
    t.name = tid.rstrip("0123456789")
    t.created = int(created * S)
    t.resolved = int(resolved * S)
    t.started = int(started * S) if started is not None else None
    t.ended = int(ended * S) if ended is not None else None
    t.status = "completed" if ended is not None else None
    t.depends_on = deps
    return t


def test_synthetic_run_path_and_split(run_dir: Path) -> None:
    path = critical_path(open_run(run_dir))
    assert path is not None
    steps = [
        (s.task_id, s.length_s, s.dependency_wait_s, s.scheduling_wait_s, s.execution_s, s.other_s) for s in path.steps
    ]
    assert steps == [
        ("a2", 4.0, 0.0, 0.5, 3.5, 0.0),  # a2 ended after a1, so a3 waited for a2
        ("a3", 5.0, 0.0, 1.0, 4.0, 0.0),  # its dependency wait lies under a2's stretch
        ("b1", 3.0, 0.0, 1.0, 1.0, 1.0),  # created 1 s after a3 ended: "other"
        ("b2", 6.0, 0.5, 0.5, 5.0, 0.0),  # resolved 0.5 s after b1 ended
    ]
    assert path.length_s == 18.0
    d = path.to_dict()
    assert (d["execution_s"], d["scheduling_wait_s"], d["dependency_wait_s"], d["other_s"]) == (13.5, 3.0, 0.5, 1.0)
    assert d["execution_s"] + d["scheduling_wait_s"] + d["dependency_wait_s"] + d["other_s"] == d["length_s"]


def test_per_workflow(run_dir: Path) -> None:
    run = open_run(run_dir)
    path = critical_path(run, workflow_id="wf-a")
    assert path is not None
    assert [s.task_id for s in path.steps] == ["a2", "a3", "a4"]  # a4 (failed) ended last in wf-a
    assert path.steps[-1].status == "failed"
    path_b = critical_path(run.tasks(), workflow_id="wf-b")
    assert path_b is not None and [s.task_id for s in path_b.steps] == ["b1", "b2"]


def test_diamond_follows_the_last_finishing_branch() -> None:
    tasks = [
        _task("src", 0, 0, 0, 1),
        _task("fast", 0, 1, 1, 2, ("src",)),
        _task("slow", 0, 1, 1.5, 6, ("src",)),
        _task("join", 0, 6, 7, 8, ("fast", "slow")),
        _task("late", 0, 0, None, None),  # never ran: ignored
    ]
    path = critical_path(tasks)
    assert path is not None
    assert [s.task_id for s in path.steps] == ["src", "slow", "join"]
    assert path.length_s == 8
    assert [s.scheduling_wait_s for s in path.steps] == [0, 0.5, 1]


def test_cycles_and_unknown_dependencies_do_not_loop() -> None:
    a = _task("a", 0, 0, 0, 1, ("b", "ghost"))
    b = _task("b", 0, 0, 0, 2, ("a",))
    path = critical_path({"a": a, "b": b})
    assert path is not None
    assert [s.task_id for s in path.steps] == ["a", "b"]


def test_no_finished_task() -> None:
    assert critical_path([_task("x", 0, 0, 1, None)]) is None
    assert critical_path([]) is None
    assert format_critical_path(None) == "Critical path: no task ended.\n"


def test_format_long_paths_are_elided() -> None:
    tasks = [_task("t0", 0, 0, 0, 1)]
    for i in range(1, 30):
        tasks.append(_task(f"t{i}", 0, i, i, i + 1, (f"t{i - 1}",)))
    path = critical_path(tasks)
    assert path is not None and len(path.steps) == 30
    text = format_critical_path(path, max_steps=10)
    assert "Critical path: 30 tasks, 30.000s" in text
    assert "... 20 more steps ..." in text
    assert "   30  t29" in text
    assert "    1  t0 " in text


@pytest.mark.parametrize("status", ["canceled"])
def test_a_task_that_never_started_has_no_execution(status: str) -> None:
    t = _task("c", 0, 1, None, 3)
    t.status = status
    path = critical_path([t])
    assert path is not None
    s = path.steps[0]
    assert (s.dependency_wait_s, s.scheduling_wait_s, s.execution_s) == (1, 2, 0)
