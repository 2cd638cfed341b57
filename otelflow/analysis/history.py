"""Runs over time, and which ones regressed: ``otelflow history``.

Each run's numbers come from the summary its session wrote into ``run.json`` when it
stopped, so a history of many 10⁶-task runs reads a few kB per run. A run without a
summary (killed, or still running) is read from its workflow events instead when a
workflow name is asked for, else listed with what ``run.json`` has.

A run **regressed** when its duration exceeds the median of the earlier runs' durations
by more than ``threshold_pct`` percent; at least ``min_earlier`` earlier runs are needed
to judge.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from otelflow.analysis.reader import RunInfo, list_runs, open_run

__all__ = ["format_history", "history"]

_NS = 1e9


def _from_summary(info: RunInfo, name: str | None) -> dict[str, Any] | None:
    summary = info.meta.get("summary")
    if not isinstance(summary, dict):
        return None
    raw_tasks = summary.get("tasks")
    tasks: dict[str, Any] = raw_tasks if isinstance(raw_tasks, dict) else {}
    if name is None:
        dur = (info.end_time - info.start_time) / _NS if info.end_time is not None else summary.get("elapsed_s")
        return {
            "duration_s": dur,
            "tasks": tasks.get("created"),
            "completed": tasks.get("completed"),
            "failed": tasks.get("failed"),
            "workflows": None,
        }
    wfs = [w for w in (summary.get("workflows") or {}).values() if isinstance(w, dict) and w.get("name") == name]
    if not wfs:
        return {"duration_s": None, "tasks": 0, "completed": 0, "failed": 0, "workflows": 0}
    durs = [w["duration_s"] for w in wfs if isinstance(w.get("duration_s"), (int, float))]
    counts = [w.get("tasks") or {} for w in wfs]
    completed = sum(c.get("completed", 0) for c in counts)
    failed = sum(c.get("failed", 0) for c in counts)
    return {
        "duration_s": statistics.fmean(durs) if durs else None,
        "tasks": completed + failed + sum(c.get("canceled", 0) for c in counts),
        "completed": completed,
        "failed": failed,
        "workflows": len(wfs),
    }


def _from_events(info: RunInfo, name: str) -> dict[str, Any]:
    """A run without a summary: its workflows' times from their Started/Ended events."""
    run = open_run(info.path)
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}
    for ev in run.events(types={"WorkflowStarted", "WorkflowEnded"}, ordered=False):
        wid, t = ev.get("workflow_id"), ev.get("event_time")
        if not isinstance(wid, str) or not isinstance(t, int):
            continue
        if ev.get("type") == "WorkflowStarted":
            if ev.get("workflow_name") == name:
                starts[wid] = min(starts.get(wid, t), t)
        else:
            ends[wid] = max(ends.get(wid, t), t)
    durs = [(ends[w] - s) / _NS for w, s in starts.items() if w in ends]
    return {
        "duration_s": statistics.fmean(durs) if durs else None,
        "tasks": None,
        "completed": None,
        "failed": None,
        "workflows": len(starts),
    }


def history(
    runs_dir: str | os.PathLike[str] | None = None,
    *,
    name: str | None = None,
    threshold_pct: float = 20.0,
    min_earlier: int = 2,
) -> dict[str, Any]:
    """The runs of a runs directory over time, each judged against the earlier ones.

    Args:
        runs_dir: The runs directory (default :func:`~otelflow.analysis.reader.default_runs_dir`).
        name: Only this workflow: durations are its mean workflow duration per run, task
            counts its tasks'; runs without it are left out.
        threshold_pct: A run regressed when its duration exceeds the median of the
            earlier runs' by more than this.
        min_earlier: Earlier runs (with a duration) needed before a run is judged.

    Returns:
        ``{"runs_dir", "name", "threshold_pct", "runs": [...], "regressions": [run ids]}``;
        each run: ``run_id``, ``start_time``, ``status``, ``duration_s``, ``tasks``,
        ``completed``, ``failed``, ``workflows``, ``baseline_s`` (median of the earlier
        durations, or None), ``change_pct`` and ``regressed``.
    """
    if threshold_pct < 0:
        raise ValueError(f"The regression threshold is a percentage ≥ 0, not {threshold_pct:g}.")
    infos = list_runs(runs_dir)
    rows: list[dict[str, Any]] = []
    earlier: list[float] = []
    for info in infos:
        row = _from_summary(info, name)
        if row is None:
            row = (
                _from_events(info, name)
                if name is not None
                else {"duration_s": None, "tasks": None, "completed": None, "failed": None, "workflows": None}
            )
        if name is not None and not row["workflows"]:
            continue
        dur = row["duration_s"]
        baseline = statistics.median(earlier) if len(earlier) >= min_earlier else None
        change = (dur / baseline - 1) * 100 if baseline and dur is not None else None
        rows.append(
            {
                "run_id": info.run_id,
                "start_time": info.start_time,
                "status": info.status,
                **row,
                "baseline_s": baseline,
                "change_pct": change,
                "regressed": change is not None and change > threshold_pct,
            }
        )
        if dur is not None:
            earlier.append(dur)
    return {
        "runs_dir": str(runs_dir) if runs_dir is not None else None,
        "name": name,
        "threshold_pct": threshold_pct,
        "runs": rows,
        "regressions": [r["run_id"] for r in rows if r["regressed"]],
    }


def format_history(h: dict[str, Any]) -> str:
    """Render :func:`history` as a terminal table."""
    from datetime import datetime, timezone

    from otelflow.analysis.report import format_duration

    what = f"workflow {h['name']!r}" if h["name"] else "runs"
    if not h["runs"]:
        return f"No {what} in the runs directory.\n"
    head = ["RUN ID", "STARTED", "DURATION", "TASKS", "FAILED", "VS MEDIAN", ""]
    table = [head]
    for r in h["runs"]:
        started = datetime.fromtimestamp(r["start_time"] / _NS, tz=timezone.utc).astimezone()
        change = "-" if r["change_pct"] is None else f"{r['change_pct']:+.1f}%"
        table.append(
            [
                r["run_id"],
                started.strftime("%Y-%m-%d %H:%M:%S"),
                format_duration(r["duration_s"]),
                "-" if r["tasks"] is None else str(r["tasks"]),
                "-" if r["failed"] is None else str(r["failed"]),
                change,
                "REGRESSED" if r["regressed"] else "",
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    out = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in table]
    n = len(h["regressions"])
    out.append(
        f"{len(h['runs'])} {what if h['name'] else 'run(s)'}; {n} regressed (duration > median of earlier runs "
        f"+ {h['threshold_pct']:g}%)"
    )
    return "\n".join(out) + "\n"
