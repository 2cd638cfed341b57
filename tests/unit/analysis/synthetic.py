"""A small synthetic run directory, written line by line in the run-directory format.

Times are whole or half seconds after ``T0`` so every number a report derives is known:

workflow ``wf-a`` "etl" (0 s → 10 s), block ``blk-1`` "extract" (0 s → 4 s):

====  =========  ======  ===========  =======  ========  =======  ======  =========  ======
task  name       block   depends_on   created  resolved  started  ended   status     worker
====  =========  ======  ===========  =======  ========  =======  ======  =========  ======
a1    load       blk-1   —            0        0         1        3       completed  w1
a2    load       blk-1   —            0        0         0.5      4       completed  w2
a3    transform  —       a1, a2       0        4         5        9       completed  w1
a4    check      —       a3           1        9         9.5      10      failed     w2
====  =========  ======  ===========  =======  ========  =======  ======  =========  ======

workflow ``wf-b`` "train" (10 s → 20 s), b3 still running when the session stopped at 20 s:

====  =====  ===========  =======  ========  =======  ======  ==========  ======
task  name   depends_on   created  resolved  started  ended   status      worker
====  =====  ===========  =======  ========  =======  ======  ==========  ======
b1    prep   a3           10       10        11       12      completed   w1
b2    fit    b1           10       12.5      13       18      completed   w2
b3    eval   b2           10       18        18.5     —       incomplete  w1
====  =====  ===========  =======  ========  =======  ======  ==========  ======

(b1 is also queued at 10.5.) Main-process lines go to ``main-host-100.jsonl``; every
``TaskStarted`` plus resource samples, a log record and a user event go to
``worker-host-200.jsonl``, whose last line is torn (the worker was killed mid-write).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

T0 = 1_700_000_000_000_000_000
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SESSION_SPAN = "b7ad6b7169203331"
WF_SPANS = {"wf-a": "00000000000f0a01", "wf-b": "00000000000f0b01"}
BLOCK_SPAN = "00000000000b1001"


def ns(seconds: float) -> int:
    """``T0`` plus ``seconds``, in ns."""
    return T0 + round(seconds * 1e9)


def span_id(task_id: str) -> str:
    """The (made-up) span id of a task."""
    return task_id.encode().hex().rjust(16, "0")


# id: (name, workflow, block, deps, created, resolved, queued, started, ended, status, worker)
TASKS: dict[str, tuple[Any, ...]] = {
    "a1": ("load", "wf-a", "blk-1", (), 0, 0, None, 1, 3, "completed", "w1"),
    "a2": ("load", "wf-a", "blk-1", (), 0, 0, None, 0.5, 4, "completed", "w2"),
    "a3": ("transform", "wf-a", None, ("a1", "a2"), 0, 4, None, 5, 9, "completed", "w1"),
    "a4": ("check", "wf-a", None, ("a3",), 1, 9, None, 9.5, 10, "failed", "w2"),
    "b1": ("prep", "wf-b", None, ("a3",), 10, 10, 10.5, 11, 12, "completed", "w1"),
    "b2": ("fit", "wf-b", None, ("b1",), 10, 12.5, None, 13, 18, "completed", "w2"),
    "b3": ("eval", "wf-b", None, ("b2",), 10, 18, None, 18.5, None, "incomplete", "w1"),
}
WF_NAMES = {"wf-a": "etl", "wf-b": "train"}


def _event(typ: str, t: float, span: str, **fields: Any) -> dict[str, Any]:
    line = {
        "section": "event",
        "trace_id": TRACE_ID,
        "span_id": span,
        "type": typ,
        "event_id": 0,
        "event_time": ns(t),
        "emit_time": ns(t) + 1000,
        "session_id": "sess-1",
    }
    line.update({k: v for k, v in fields.items() if v is not None})
    return line


def _dump(lines: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(x, separators=(",", ":")) + "\n" for x in lines)


def write_run(
    runs_dir: Path,
    run_id: str = "run-a",
    *,
    tasks: dict[str, tuple[Any, ...]] | None = None,
    start_offset: float = 0.0,
    torn: bool = True,
) -> Path:
    """Write the synthetic run into ``runs_dir/run_id`` and return that directory.

    Args:
        runs_dir: Parent directory (created if needed).
        run_id: The run directory's name and ``run_id``.
        tasks: Replace :data:`TASKS` (same tuple layout).
        start_offset: Added to ``run.json``'s start_time (seconds) to order runs.
        torn: End the worker file with a torn line.
    """
    tasks = TASKS if tasks is None else tasks
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True)
    main: list[tuple[int, dict[str, Any]]] = []  # (write order key, line)
    worker: list[dict[str, Any]] = []

    def ev(typ: str, t: float, span: str, **f: Any) -> None:
        main.append((ns(t), _event(typ, t, span, **f)))

    ev("SessionStarted", 0, SESSION_SPAN, run_id=run_id, service_name="synthetic")
    wfs = sorted({v[1] for v in tasks.values()})
    wf_times = {"wf-a": (0, 10, 10), "wf-b": (10, 19, 20)}  # start, exit, span end
    for wf in wfs:
        start, exit_, _ = wf_times[wf]
        ev("WorkflowStarted", start, WF_SPANS[wf], workflow_id=wf, workflow_name=WF_NAMES[wf])
        ev("WorkflowEnded", exit_, WF_SPANS[wf], workflow_id=wf, status="completed")
    if any(v[2] == "blk-1" for v in tasks.values()):
        ev("BlockStarted", 0, BLOCK_SPAN, workflow_id="wf-a", block_id="blk-1", block_name="extract")
        ev("BlockEnded", 4, BLOCK_SPAN, workflow_id="wf-a", block_id="blk-1", status="completed")
    for tid, (name, wf, blk, deps, created, resolved, queued, started, ended, status, wkr) in tasks.items():
        sid = span_id(tid)
        common = {"workflow_id": wf, "block_id": blk, "task_id": tid, "task_name": name}
        ev("TaskCreated", created, sid, depends_on=list(deps) or None, backend="futures", **common)
        ev("TaskResolved", resolved, sid, **common)
        ev("TaskSubmitted", resolved, sid, **common)
        if queued is not None:
            ev("TaskQueued", queued, sid, **common)
        worker.append(_event("TaskStarted", started, sid, worker=wkr, pid=200, **common))
        if status == "completed":
            ev("TaskCompleted", ended, sid, cpu_time_s=0.25, **common)
        elif status == "failed":
            ev("TaskFailed", ended, sid, error_type="ValueError", error_message="bad row 7", **common)
        # The task span, written by the main process when the task ended (or at stop).
        end = ended if ended is not None else 20
        events = [["TaskCreated", ns(created)], ["TaskResolved", ns(resolved)], ["TaskSubmitted", ns(resolved)]]
        if queued is not None:
            events.append(["TaskQueued", ns(queued)])
        events.append(["TaskStarted", ns(started)])
        events.append(["Task" + status.capitalize(), ns(end)])
        attrs: dict[str, Any] = {
            "otelflow.task.id": tid,
            "otelflow.task.name": name,
            "otelflow.task.status": status,
            "otelflow.workflow.id": wf,
            "otelflow.workflow.name": WF_NAMES[wf],
            "otelflow.task.backend": "futures",
            "otelflow.task.worker": wkr,
        }
        if blk:
            attrs["otelflow.block.id"] = blk
            attrs["otelflow.block.name"] = "extract"
        if deps:
            attrs["otelflow.task.depends_on"] = list(deps)
        if status == "failed":
            attrs["error.type"] = "ValueError"
        span: dict[str, Any] = {
            "section": "span",
            "trace_id": TRACE_ID,
            "span_id": sid,
            "parent_span_id": BLOCK_SPAN if blk else WF_SPANS[wf],
            "name": name,
            "kind": "task",
            "start_time": ns(created),
            "end_time": ns(end),
            "status": status,
            "attributes": attrs,
            "events": events,
            "links": [span_id(d) for d in deps],
        }
        if status == "failed":
            span["error_message"] = "bad row 7"
        main.append((ns(end), span))
    if any(v[2] == "blk-1" for v in tasks.values()):
        main.append((ns(4), _scope_span("block", "blk-1", "extract", BLOCK_SPAN, WF_SPANS["wf-a"], 0, 4)))
    for wf in wfs:
        start, _, end = wf_times[wf]
        main.append((ns(end), _scope_span("workflow", wf, WF_NAMES[wf], WF_SPANS[wf], SESSION_SPAN, start, end)))
    ev("SessionEnded", 20, SESSION_SPAN)
    main.append(
        (
            ns(20),
            {
                "section": "span",
                "trace_id": TRACE_ID,
                "span_id": SESSION_SPAN,
                "name": "session",
                "kind": "session",
                "start_time": ns(0),
                "end_time": ns(20),
                "status": "completed",
                "attributes": {"otelflow.session.id": "sess-1"},
            },
        )
    )
    main.append(
        (
            ns(20),
            {
                "section": "metric",
                "time": ns(20),
                "scope": "otelflow",
                "name": "otelflow.tasks.completed",
                "unit": "{task}",
                "kind": "sum",
                "temporality": "cumulative",
                "points": [{"attributes": {"otelflow.task.name": "load"}, "value": 2}],
            },
        )
    )
    main.sort(key=lambda kv: kv[0])  # stable: lines at equal times keep their order
    (run_dir / "main-host-100.jsonl").write_text(_dump([line for _, line in main]))

    worker.append(
        _event(
            "ResourceUpdate", 5, SESSION_SPAN, scope="node", node="host", cpu_utilization=0.5, memory_utilization=0.25
        )
    )
    worker.append(_event("LogRecord", 6, span_id("a3"), level="WARNING", logger="etl", message="slow", task_id="a3"))
    worker.append(
        _event(
            "ResourceUpdate", 15, SESSION_SPAN, scope="node", node="host", cpu_utilization=0.9, memory_utilization=0.75
        )
    )
    worker.append(_event("ml.Checkpoint", 16, span_id("b2"), task_id="b2", step=100))
    worker.sort(key=lambda x: x["event_time"])
    # A little disorder, as when two worker threads race to the file: a1 (1 s) is written
    # before a2 (0.5 s).
    worker[0], worker[1] = worker[1], worker[0]
    text = _dump(worker)
    if torn:
        text += '{"section":"event","trace_id":"' + TRACE_ID + '","type":"TaskCompl'
    (run_dir / "worker-host-200.jsonl").write_text(text)

    meta = {
        "run_id": run_id,
        "session_id": "sess-1",
        "service_name": "synthetic",
        "trace_id": TRACE_ID,
        "start_time": ns(start_offset),
        "end_time": ns(start_offset + 20),
        "status": "completed",
        "host": "host",
        "pid": 100,
        "versions": {"otelflow": "0.0.test", "python": "3.11"},
        "config": {},
        "summary": {"tasks": {"created": len(tasks)}, "dropped": {"events": 0}},
    }
    (run_dir / "run.json").write_text(json.dumps(meta))
    return run_dir


def _scope_span(kind: str, sid: str, name: str, span: str, parent: str, start: float, end: float) -> dict[str, Any]:
    return {
        "section": "span",
        "trace_id": TRACE_ID,
        "span_id": span,
        "parent_span_id": parent,
        "name": f"{kind} {name}",
        "kind": kind,
        "start_time": ns(start),
        "end_time": ns(end),
        "status": "completed",
        "attributes": {f"otelflow.{kind}.id": sid, f"otelflow.{kind}.name": name},
    }
