"""A fixed run recorded through the live pipeline, and the numbers every view derives from it.

:func:`record` drives a real session with explicit event times (the tracker's
``event_time=``), so each run it records has the same task times whatever the machine.
:func:`numbers` extracts every number ``summary()``, ``otelflow report`` (with the
critical path) and the per-task tables (which the plots draw) give for such a run, with
the ids that differ between recordings (run, trace, span ids) left out.

``fixed_run_numbers.json`` holds :func:`numbers` of a run recorded by otelflow *before*
task spans started at TaskStarted (commit 7d4e3c2), written by
``python -m tests.unit.analysis.fixed_run > tests/unit/analysis/fixed_run_numbers.json``
in that tree; the test compares today's numbers with it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import otelflow

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
MS = 1_000_000

#: (task id, name, depends on, created, submitted, queued, started, end, outcome) in ms after T0.
TASKS: tuple[tuple[str, str, tuple[str, ...], int, int | None, int | None, int | None, int, str], ...] = (
    ("t1", "load", (), 0, 5, None, 300, 400, "completed"),
    ("t2", "load", (), 0, 5, 20, 50, 450, "completed"),
    ("t3", "transform", ("t1", "t2"), 10, 470, None, 900, 1000, "completed"),
    ("t4", "check", ("t3",), 10, 1010, 1020, 1100, 1150, "failed"),
    ("t6", "slow", (), 20, 30, 40, None, 1200, "canceled"),  # canceled while queued
    ("t7", "export", ("t3",), 15, 1005, None, 1300, 1900, "completed"),
)


def record(runs_dir: Path) -> Path:
    """Record the fixed run into ``runs_dir``; return its run directory."""
    tel = otelflow.start_telemetry(checkpoint_path=str(runs_dir), resource_poll_interval=0, environ={})
    trk = otelflow.tracker("fixed")
    steps: list[tuple[int, int, str, str]] = []  # (ms, task order, step, task id), in time order
    for order, (tid, _name, _deps, created, submitted, queued, started, end, outcome) in enumerate(TASKS):
        for at, step in ((created, "created"), (submitted, "submitted"), (queued, "queued"), (started, "started")):
            if at is not None:
                steps.append((at, order, step, tid))
        steps.append((end, order, outcome, tid))
    names = {t[0]: t for t in TASKS}
    with otelflow.workflow_scope("fixed-wf"):
        for at, _order, step, tid in sorted(steps):
            when = T0 + at * MS
            if step == "created":
                trk.created(tid, names[tid][1], depends_on=list(names[tid][2]), event_time=when)
            elif step == "failed":
                trk.failed(tid, ValueError(f"{tid} broke"), event_time=when)
            elif step == "canceled":
                trk.canceled(tid, event_time=when, reason="stop")
            else:
                getattr(trk, step)(tid, event_time=when)
    tel.stop()
    assert tel.run_dir is not None
    return Path(tel.run_dir)


_TASK_KEYS = (
    "task_id", "name", "status", "workflow_name", "created", "resolved", "submitted", "queued", "started", "ended",
    "depends_on", "error_type", "error_message", "dependency_wait_s", "scheduling_wait_s", "execution_s",
)  # fmt: skip
_SUMMARY_KEYS = ("tasks", "duration_s", "dependency_wait_s", "scheduling_wait_s", "by_task_name")
_REPORT_KEYS = ("tasks", "duration_s", "dependency_wait_s", "scheduling_wait_s", "by_task_name", "failures", "slowest")


def numbers(run_dir: Path) -> dict[str, Any]:
    """Every number the views derive from a recorded run (ids that vary left out)."""
    from otelflow.analysis import open_run
    from otelflow.analysis.report import build_report

    run = open_run(run_dir)
    meta = json.loads((Path(run_dir) / "run.json").read_text())
    summary = meta["summary"]
    report = build_report(run)
    wf_id, wf = next(iter(report["workflows"].items()))
    path = report["critical_path"]
    out = {
        "summary": {k: summary[k] for k in _SUMMARY_KEYS},
        "report": {k: report[k] for k in _REPORT_KEYS},
        "workflow_tasks": {k: wf[k] for k in ("tasks", "execution_s", "dependency_wait_s", "scheduling_wait_s")},
        "critical_path": {k: v for k, v in path.items() if k != "steps"} | {"steps": path["steps"]},
        "tasks": {tid: {k: t.to_dict()[k] for k in _TASK_KEYS} for tid, t in sorted(run.tasks().items())},
    }
    # The workflow id is new in every recording.
    return json.loads(json.dumps(out).replace(json.dumps(wf_id), '"<workflow id>"'))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        json.dump(numbers(record(Path(tmp))), sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
