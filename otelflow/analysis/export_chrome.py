"""A run as Chrome trace-event JSON, for Perfetto (ui.perfetto.dev) and ``chrome://tracing``.

One process per run, one track (thread) per worker — tasks with no known worker share an
``unassigned`` track — and each task a complete (``"X"``) slice from Started to its end,
with its ids, state and waits as args. Each dependency is a flow arrow (``"s"`` at the
end of the upstream slice, ``"f"`` bound to the start of the downstream one). Times are
µs since the run's first task. The file is written as it is produced, so memory does not
grow with it.

Format: https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU
"""

from __future__ import annotations

import json
import os
from typing import Any

from otelflow.analysis._tables import TaskInfo
from otelflow.analysis.reader import Run

__all__ = ["write_chrome_trace"]

_UNASSIGNED = "unassigned"


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)


def write_chrome_trace(run: Run, output: str | os.PathLike[str]) -> dict[str, int]:
    """Write ``run`` as a Chrome trace-event JSON file.

    Args:
        run: The run.
        output: The ``.json`` file to write.

    Returns:
        Counts: ``{"tracks", "slices", "flows"}``.
    """
    tasks = run.tasks()
    ran = [t for t in tasks.values() if t.started is not None]
    origin = min((t.started for t in ran if t.started is not None), default=0)
    end_of_run = run.end_time or run.data.session_end or run.data.last_time or origin
    tids: dict[str, int] = {}
    for t in ran:
        key = t.worker or _UNASSIGNED
        if key not in tids:
            tids[key] = len(tids) + 1
    counts = {"tracks": len(tids), "slices": 0, "flows": 0}

    def us(ns: int) -> float:
        return (ns - origin) / 1000

    with open(output, "w", encoding="utf-8") as f:
        f.write('{"displayTimeUnit":"ms","otherData":')
        f.write(_dump({"run_id": run.run_id, "service_name": run.service_name, "origin_ns": origin}))
        f.write(',"traceEvents":[\n')
        first = True

        def emit(ev: dict[str, Any]) -> None:
            nonlocal first
            if not first:
                f.write(",\n")
            first = False
            f.write(_dump(ev))

        emit({"ph": "M", "pid": 1, "tid": 0, "name": "process_name", "args": {"name": f"run {run.run_id}"}})
        for name, tid in tids.items():
            emit({"ph": "M", "pid": 1, "tid": tid, "name": "thread_name", "args": {"name": name}})
            emit({"ph": "M", "pid": 1, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": tid}})
        flow_id = 0
        for t in ran:
            assert t.started is not None
            end = t.ended if t.ended is not None else max(t.started, end_of_run)
            tid = tids[t.worker or _UNASSIGNED]
            emit(_slice(t, us(t.started), max(0.0, us(end) - us(t.started)), tid))
            counts["slices"] += 1
            for dep in t.depends_on:
                up = tasks.get(dep)
                if up is None or up.started is None or up.ended is None:
                    continue
                flow_id += 1
                # "s" inside the upstream slice (its last µs), "f" bound to the enclosing
                # slice at the downstream start ("bp": "e").
                s_ts = max(us(up.started), us(up.ended) - 0.001)
                emit(_flow("s", flow_id, s_ts, tids[up.worker or _UNASSIGNED]))
                emit({**_flow("f", flow_id, us(t.started), tid), "bp": "e"})
                counts["flows"] += 1
        f.write("\n]}\n")
    return counts


def _slice(t: TaskInfo, ts: float, dur: float, tid: int) -> dict[str, Any]:
    execution, dependency, dispatch, queue, scheduling = t.timings()
    args: dict[str, Any] = {
        "task_id": t.task_id,
        "state": t.state,
        "workflow_id": t.workflow_id,
        "dependency_wait_s": dependency,
        "dispatch_wait_s": dispatch,
        "queue_wait_s": queue,
        "scheduling_wait_s": scheduling,
        "execution_s": execution,
    }
    if t.error_type:
        args["error_type"] = t.error_type
    name = t.name or "task"
    return {"ph": "X", "pid": 1, "tid": tid, "ts": ts, "dur": dur, "name": name, "cat": t.state, "args": args}


def _flow(ph: str, fid: int, ts: float, tid: int) -> dict[str, Any]:
    return {"ph": ph, "id": fid, "pid": 1, "tid": tid, "ts": ts, "name": "depends_on", "cat": "dependency"}

