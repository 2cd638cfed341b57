"""The run report: what happened, where the time went, what failed.

:func:`build_report` reads a run once (see :mod:`otelflow.analysis._tables`) and returns a
JSON-ready dict; :func:`format_report` renders it for a terminal. Percentiles are exact
(linear interpolation between the two nearest ranks, like ``numpy.percentile``), so they
can differ slightly from the live ``summary()`` in ``run.json``, which uses a ~1 % sketch.

Waits follow the definitions in :mod:`otelflow.events.waits`: dependency wait Created →
Resolved, dispatch wait Resolved (else Submitted) → handed to the executor, queue wait
→ Started, execution (``duration_s``) Started → terminal; scheduling wait (kept for
compatibility) is dispatch + queue wait.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from otelflow.analysis._format import format_duration
from otelflow.analysis._tables import PHASE_PREFIX, STATES, RunData, TaskInfo
from otelflow.analysis.critical_path import critical_path, format_critical_path
from otelflow.analysis.reader import Run
from otelflow.analysis.utilization import failure_groups, format_utilization, utilization

__all__ = ["build_report", "format_duration", "format_report", "stats"]

_NS = 1e9
_WAITS = ("duration_s", "dependency_wait_s", "dispatch_wait_s", "queue_wait_s", "scheduling_wait_s")
_TOTALS = ("execution_s", "dependency_wait_s", "dispatch_wait_s", "queue_wait_s", "scheduling_wait_s")


def _quantile(values: list[float], q: float) -> float:
    rank = q * (len(values) - 1)
    lo = math.floor(rank)
    hi = math.ceil(rank)
    return values[lo] + (values[hi] - values[lo]) * (rank - lo)


def stats(values: Iterable[float]) -> dict[str, Any]:
    """Summary statistics of ``values``.

    Args:
        values: Seconds (or any numbers).

    Returns:
        ``{"count", "total", "mean", "min", "max", "p50", "p95"}``; all but ``count`` and
        ``total`` are None when there are no values.
    """
    v = sorted(values)
    if not v:
        return {"count": 0, "total": 0.0, "mean": None, "min": None, "max": None, "p50": None, "p95": None}
    total = math.fsum(v)
    return {
        "count": len(v),
        "total": total,
        "mean": total / len(v),
        "min": v[0],
        "max": v[-1],
        "p50": _quantile(v, 0.5),
        "p95": _quantile(v, 0.95),
    }


class _Group:
    """Counts by state and the timings of a set of tasks (execution and the four waits).

    ``keep=False`` keeps only the sums (workflows and blocks need no percentiles), so a
    10⁶-task run does not hold every timing once more per scope.
    """

    __slots__ = ("keep", "states", "sums", "times")

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.states: dict[str, int] = {}
        # Packed doubles: 8 bytes a value instead of a list slot plus a float object.
        self.times: tuple[array[float], ...] = tuple(array("d") for _ in _TOTALS)
        self.sums = [0.0] * len(_TOTALS)

    def add(self, t: TaskInfo, timings: tuple[float | None, ...] | None = None) -> None:
        st = t.state
        self.states[st] = self.states.get(st, 0) + 1
        for i, v in enumerate(t.timings() if timings is None else timings):
            if v is not None:
                if self.keep:
                    self.times[i].append(v)
                else:
                    self.sums[i] += v

    def counts(self) -> dict[str, int]:
        return {"total": sum(self.states.values()), **{s: self.states.get(s, 0) for s in STATES}}

    def totals(self) -> dict[str, float]:
        """Summed seconds: ``execution_s``, ``dependency_wait_s``, ``dispatch_wait_s``,
        ``queue_wait_s``, ``scheduling_wait_s``."""
        if not self.keep:
            return dict(zip(_TOTALS, self.sums, strict=True))
        return {k: math.fsum(lst) for k, lst in zip(_TOTALS, self.times, strict=True)}

    def stats(self) -> dict[str, Any]:
        return {k: stats(lst) for k, lst in zip(_WAITS, self.times, strict=True)}


def _run_header(run: Run, data: RunData) -> dict[str, Any]:
    start = run.start_time or data.session_start or data.first_time
    end = run.end_time or data.session_end or data.last_time
    return {
        "run_id": run.run_id,
        "path": str(run.path),
        "service_name": run.service_name,
        "trace_id": run.trace_id,
        "status": run.status,
        "host": run.meta.get("host"),
        "start_time": start,
        "end_time": end,
        "duration_s": (end - start) / _NS if start is not None and end is not None else None,
        "files": [f.name for f in run.files],
        "lines": dict(data.section_counts),
        "torn_lines": run.torn_lines,
        "bad_lines": run.bad_lines,
        "out_of_order_lines": run.out_of_order,
        "notes": list(getattr(run, "notes", ())),
    }


def _task_row(t: TaskInfo) -> dict[str, Any]:
    return {
        "task_id": t.task_id,
        "task_name": t.name,
        "workflow_id": t.workflow_id,
        "block_id": t.block_id,
        "worker": t.worker,
        "status": t.state,
        "duration_s": t.execution_s,
        "dependency_wait_s": t.dependency_wait_s,
        "dispatch_wait_s": t.dispatch_wait_s,
        "queue_wait_s": t.queue_wait_s,
        "scheduling_wait_s": t.scheduling_wait_s,
    }


def build_report(run: Run, *, top: int = 10, max_failures: int = 20) -> dict[str, Any]:
    """Build the report of a run.

    Args:
        run: The run (see :func:`~otelflow.analysis.reader.open_run`).
        top: How many of the slowest tasks to list.
        max_failures: How many failed tasks to list (all are counted).

    Returns:
        A JSON-ready dict with the keys ``run``, ``tasks`` (counts by final state),
        ``duration_s``, ``dependency_wait_s``, ``dispatch_wait_s``, ``queue_wait_s``,
        ``scheduling_wait_s`` (stats in seconds; scheduling = dispatch + queue wait),
        ``workflows`` and ``blocks`` (by id: name, status, wall ``duration_s``, task
        counts, and summed ``execution_s`` and the four waits;
        a block includes its nested blocks' tasks), ``by_task_name``,
        ``workers``, ``failures``, ``failure_groups`` and ``utilization`` (see
        :mod:`otelflow.analysis.utilization`), ``slowest``, ``phases`` (by task name, stats of
        each engine-measured ``otelflow.phase.<name>_s`` task attribute, e.g. an Academy
        action's send, queue, execution and response), ``critical_path``, ``events`` (counts
        by type), ``resources`` and ``dropped``.
    """
    data = run.data
    tasks = data.tasks
    # First, while only the tables are in memory (it sorts every start and end once).
    util = utilization(data)
    overall = _Group(keep=False)  # its timings are the union of by_name's, joined below
    by_name: dict[str, _Group] = {}
    by_wf: dict[str, _Group] = {}
    by_block: dict[str, _Group] = {}
    workers: dict[str, dict[str, Any]] = {}
    failed: list[TaskInfo] = []
    error_types: dict[str, int] = {}
    # The `top` slowest, kept while passing (a bounded min-heap), not by a second pass.
    slow_heap: list[tuple[float, str, TaskInfo]] = []
    for t in tasks.values():
        tm = t.timings()
        if tm[0] is not None:
            item = (tm[0], t.task_id, t)
            if len(slow_heap) < top:
                heapq.heappush(slow_heap, item)
            elif item[:2] > slow_heap[0][:2]:
                heapq.heapreplace(slow_heap, item)
        overall.add(t, tm)
        g = by_name.get(t.name or "task")
        if g is None:
            g = by_name[t.name or "task"] = _Group()
        g.add(t, tm)
        if t.workflow_id is not None:
            g = by_wf.get(t.workflow_id)
            if g is None:
                g = by_wf[t.workflow_id] = _Group(keep=False)
            g.add(t, tm)
        bid = t.block_id
        hops = 0
        while bid is not None and hops < 64:  # a task counts in its block and every enclosing one
            by_block.setdefault(bid, _Group(keep=False)).add(t, tm)
            parent = data.blocks.get(bid)
            bid = parent.parent_block_id if parent is not None else None
            hops += 1
        if t.started is not None:
            w = workers.setdefault(t.worker or "unknown", {"tasks": 0, "busy_s": 0.0})
            w["tasks"] += 1
            w["busy_s"] += t.execution_s or 0.0
        if t.state == "failed":
            failed.append(t)
            et = t.error_type or "Exception"
            error_types[et] = error_types.get(et, 0) + 1

    workflows: dict[str, Any] = {}
    for wid in sorted(set(data.workflows) | set(by_wf), key=lambda w: (_start(data.workflows.get(w)), w)):
        sc = data.workflows.get(wid)
        g = by_wf.get(wid, _Group(keep=False))
        workflows[wid] = {
            "name": sc.name if sc else None,
            "status": sc.status if sc else None,
            "start_time": sc.start if sc else None,
            "end_time": sc.end if sc else None,
            "duration_s": sc.duration_s if sc else None,
            "tasks": g.counts(),
            **g.totals(),
        }
    blocks: dict[str, Any] = {}
    for bid in sorted(set(data.blocks) | set(by_block), key=lambda b: (_start(data.blocks.get(b)), b)):
        sc = data.blocks.get(bid)
        g = by_block.get(bid, _Group(keep=False))
        blocks[bid] = {
            "name": sc.name if sc else None,
            "workflow_id": sc.workflow_id if sc else None,
            "parent_block_id": sc.parent_block_id if sc else None,
            "status": sc.status if sc else None,
            "start_time": sc.start if sc else None,
            "end_time": sc.end if sc else None,
            "duration_s": sc.duration_s if sc else None,
            "tasks": g.counts(),
            **g.totals(),
        }

    by_task_name = {name: {"tasks": g.counts(), **g.stats()} for name, g in sorted(by_name.items())}
    failed.sort(key=lambda t: (t.ended or 0, t.task_id))
    slowest = [t for _, _, t in sorted(slow_heap, key=lambda x: (x[0], x[1]), reverse=True)]
    path = critical_path(tasks)
    summary = run.meta.get("summary") if isinstance(run.meta.get("summary"), dict) else {}
    overall_stats = {
        k: stats(_joined(g.times[i] for g in by_name.values())) for i, k in enumerate(_WAITS)
    }
    return {
        "run": _run_header(run, data),
        "tasks": overall.counts(),
        **overall_stats,
        "workflows": workflows,
        "blocks": blocks,
        "by_task_name": by_task_name,
        "workers": dict(sorted(workers.items())),
        "failures": {
            "count": len(failed),
            "by_error_type": dict(sorted(error_types.items(), key=lambda kv: (-kv[1], kv[0]))),
            "tasks": [
                {
                    "task_id": t.task_id,
                    "task_name": t.name,
                    "workflow_id": t.workflow_id,
                    "error_type": t.error_type,
                    "error_message": t.error_message,
                    "end_time": t.ended,
                }
                for t in failed[:max_failures]
            ],
        },
        "failure_groups": failure_groups(data),
        "utilization": util,
        "slowest": [_task_row(t) for t in slowest],
        "phases": _phases(tasks.values()),
        "critical_path": path.to_dict() if path is not None else None,
        "events": dict(sorted(data.event_counts.items())),
        "resources": {k: v.to_dict() for k, v in sorted(data.resources.items())},
        "dropped": (summary or {}).get("dropped") or {},
    }


def _phases(tasks: Iterable[TaskInfo]) -> dict[str, dict[str, Any]]:
    """By task name: stats of each ``otelflow.phase.<name>_s`` attribute, in first-seen order."""
    values: dict[str, dict[str, list[float]]] = {}
    for t in tasks:
        attrs = t.attributes
        if not attrs:
            continue
        for k, v in attrs.items():
            if k.startswith(PHASE_PREFIX) and isinstance(v, (int, float)):
                phase = k[len(PHASE_PREFIX) :].removesuffix("_s")
                values.setdefault(t.name or "task", {}).setdefault(phase, []).append(float(v))
    return {name: {p: stats(v) for p, v in ph.items()} for name, ph in sorted(values.items())}


def _joined(parts: Iterable[array[float]]) -> array[float]:
    out = array("d")
    for p in parts:
        out.extend(p)
    return out


def _start(sc: Any) -> int:
    return sc.start if sc is not None and sc.start is not None else 0


# --- text ------------------------------------------------------------------------------------


def _time(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / _NS, tz=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _clip(value: Any, n: int) -> str:
    s = "-" if value is None else str(value)
    return s if len(s) <= n else s[: n - 1] + "…"


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return (
            "  "
            + "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()
        )

    return [fmt(headers), *(fmt(r) for r in rows)]


def _state_counts(c: dict[str, int]) -> str:
    parts = [f"{c[s]} {s}" for s in STATES if c.get(s)]
    return ", ".join(parts) if parts else "none"


def format_report(report: dict[str, Any], *, max_rows: int = 20) -> str:
    """Render a report from :func:`build_report` as terminal text.

    Args:
        report: The report dict.
        max_rows: At most this many rows per table (workflows, blocks, task names).

    Returns:
        The text, ending with a newline.
    """
    r = report["run"]
    out: list[str] = []
    out.append(f"Run {r['run_id']}  ({r['service_name']}, {r['status']})")
    out.append(
        f"  started {_time(r['start_time'])}, wall time {format_duration(r['duration_s'])}, "
        f"host {r.get('host') or '-'}, {len(r['files'])} file(s)"
    )
    if r.get("trace_id"):
        out.append(f"  trace id {r['trace_id']} (paste it into Jaeger, Tempo or Grafana)")
    notes = list(r.get("notes") or ())
    if r["torn_lines"]:
        disk_full = any("disk full" in n for n in notes)
        cause = "the disk was full" if disk_full else "a process was killed or is still writing"
        notes.append(f"{r['torn_lines']} torn last line(s) skipped ({cause})")
    if r["bad_lines"]:
        notes.append(f"{r['bad_lines']} undecodable line(s) skipped")
    if r.get("out_of_order_lines"):
        notes.append(f"{r['out_of_order_lines']} line(s) out of time order")
    dropped = {k: v for k, v in (report.get("dropped") or {}).items() if v}
    if dropped:
        notes.append("dropped while recording: " + ", ".join(f"{k}={v}" for k, v in dropped.items()))
    for n in notes:
        out.append(f"  note: {n}")

    t = report["tasks"]
    out.append("")
    out.append(f"Tasks: {t['total']} — {_state_counts(t)}")
    rows = []
    for key, label in (
        ("duration_s", "execution"),
        ("dependency_wait_s", "dependency wait"),
        ("dispatch_wait_s", "dispatch wait"),
        ("queue_wait_s", "queue wait"),
    ):
        s = report[key]
        rows.append(
            [
                label,
                str(s["count"]),
                format_duration(s["total"]),
                format_duration(s["mean"]),
                format_duration(s["p50"]),
                format_duration(s["p95"]),
                format_duration(s["max"]),
            ]
        )
    out += _table(["", "count", "total", "mean", "p50", "p95", "max"], rows, {1, 2, 3, 4, 5, 6})

    for title, key in (("Workflows", "workflows"), ("Blocks", "blocks")):
        scopes = report[key]
        if not scopes:
            continue
        out.append("")
        more = f" (first {max_rows} of {len(scopes)})" if len(scopes) > max_rows else ""
        out.append(f"{title}{more}:")
        rows = []
        for sid, w in list(scopes.items())[:max_rows]:
            c = w["tasks"]
            rows.append(
                [
                    _clip(w["name"], 24),
                    _clip(sid, 20),
                    w["status"] or "-",
                    format_duration(w["duration_s"]),
                    str(c["total"]),
                    str(c["failed"]),
                    format_duration(_sum(w, "execution_s")),
                    format_duration(_sum(w, "dependency_wait_s")),
                    format_duration(_sum(w, "dispatch_wait_s")),
                    format_duration(_sum(w, "queue_wait_s")),
                ]
            )
        out += _table(
            ["name", "id", "status", "wall", "tasks", "failed", "Σ exec", "Σ dep wait", "Σ dispatch", "Σ queue"],
            rows,
            {3, 4, 5, 6, 7, 8, 9},
        )

    names = report["by_task_name"]
    if names:
        out.append("")
        ranked = sorted(names.items(), key=lambda kv: -(kv[1]["duration_s"]["total"] or 0))
        more = f" (top {max_rows} of {len(names)} by total execution)" if len(names) > max_rows else ""
        out.append(f"By task name{more}:")
        rows = []
        for name, n in ranked[:max_rows]:
            d = n["duration_s"]
            rows.append(
                [
                    _clip(name, 28),
                    str(n["tasks"]["total"]),
                    str(n["tasks"]["failed"]),
                    format_duration(d["total"]),
                    format_duration(d["mean"]),
                    format_duration(d["p95"]),
                    format_duration(n["dependency_wait_s"]["mean"]),
                    format_duration(n["dispatch_wait_s"]["mean"]),
                    format_duration(n["queue_wait_s"]["mean"]),
                ]
            )
        out += _table(
            ["name", "tasks", "failed", "Σ exec", "mean", "p95", "mean dep wait", "mean dispatch", "mean queue"],
            rows,
            {1, 2, 3, 4, 5, 6, 7, 8},
        )

    workers = report["workers"]
    if workers:
        out.append("")
        out.append("Workers:")
        busy = sorted(workers.items(), key=lambda kv: -kv[1]["busy_s"])[:max_rows]
        out += _table(
            ["worker", "tasks", "busy"],
            [[_clip(w, 40), str(v["tasks"]), format_duration(v["busy_s"])] for w, v in busy],
            {1, 2},
        )

    f = report["failures"]
    if f["count"]:
        out.append("")
        kinds = ", ".join(f"{k} ×{v}" for k, v in f["by_error_type"].items())
        out.append(f"Failures: {f['count']} ({kinds})")
        for ft in f["tasks"]:
            msg = f": {_clip(ft['error_message'], 80)}" if ft.get("error_message") else ""
            out.append(f"  {ft['task_id']} ({ft['task_name']}) {ft['error_type']}{msg}")
        if f["count"] > len(f["tasks"]):
            out.append(f"  ... and {f['count'] - len(f['tasks'])} more")

    if report["slowest"]:
        out.append("")
        out.append(f"Slowest {len(report['slowest'])} tasks:")
        out += _table(
            ["task", "name", "workflow", "worker", "status", "exec", "dep wait", "dispatch", "queue"],
            [
                [
                    _clip(s["task_id"], 28),
                    _clip(s["task_name"], 20),
                    _clip(s["workflow_id"], 16),
                    _clip(s["worker"], 16),
                    s["status"],
                    format_duration(s["duration_s"]),
                    format_duration(s["dependency_wait_s"]),
                    format_duration(s["dispatch_wait_s"]),
                    format_duration(s["queue_wait_s"]),
                ]
                for s in report["slowest"]
            ],
            {5, 6, 7, 8},
        )

    phases = report.get("phases") or {}
    if phases:
        names = list(dict.fromkeys(p for ph in phases.values() for p in ph))
        out.append("")
        out.append("Phases by task name (mean per task, as the engine measured them):")
        rows = []
        for name, ph in list(phases.items())[:max_rows]:
            count = max(v["count"] for v in ph.values())
            rows.append(
                [_clip(name, 28), str(count)]
                + [format_duration(ph[p]["mean"]) if p in ph else "-" for p in names]
                + [format_duration(sum(ph[p]["total"] for p in ph))]
            )
        out += _table(["name", "tasks", *names, "Σ all"], rows, set(range(1, len(names) + 3)))

    extra = format_utilization(report)
    if extra:
        out.append("")
        out.append(extra.rstrip("\n"))
    out.append("")
    out.append(format_critical_path(report["critical_path"]).rstrip("\n"))
    return "\n".join(out) + "\n"


def _sum(scope: dict[str, Any], key: str) -> float:
    v = scope.get(key)
    return float(v) if isinstance(v, (int, float)) else 0.0
