"""Utilization and efficiency: how busy the workers were, and how many tasks ran at once.

Definitions (all in seconds):

* a worker's **busy time** — the summed execution (Started → end) of its tasks;
* its **uptime** — from its first ``*WorkerAdded`` event to its last ``*WorkerRemoved``
  where the engine reports them (a ``dask.WorkerAdded`` user event counts), else the
  pool's span: the first task start to the last task end of the run;
* its **utilization** — busy ÷ uptime;
* **efficiency** — Σ execution ÷ Σ worker uptime (= Σ exec ÷ (uptime × workers) when
  all workers share the pool's span). When no task names its worker, the run counts as
  ``peak concurrency`` workers;
* **concurrency** — tasks running at once: the peak, and the average over the pool's span
  (Σ execution ÷ span).

Failures are grouped by exception type with one example each (the first to fail), with
its stacktrace where the run recorded one (a ``stacktrace`` field on ``TaskFailed`` or an
``exception.stacktrace`` span attribute).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from typing import Any

from otelflow.analysis._format import format_duration
from otelflow.analysis._tables import RunData, TaskInfo

__all__ = ["failure_groups", "format_utilization", "peak_concurrency", "utilization"]

_NS = 1e9


def peak_concurrency(tasks: Iterable[TaskInfo]) -> tuple[int, int | None]:
    """The most tasks running at once and when that was first reached (ns).

    A task ending at the instant another starts does not overlap it.
    """
    starts: array[int] = array("q")
    ends: array[int] = array("q")
    for t in tasks:
        se = t.run_span()
        if se is not None:
            starts.append(se[0])
            ends.append(max(se))
    if not starts:
        return 0, None
    # Sorted one at a time through a list of offsets from the first start (small ints
    # take 32 bytes, epoch ns 48), then packed again: peak memory is one such list.
    t0 = min(starts)
    starts = array("q", sorted(x - t0 for x in starts))
    ends = array("q", sorted(x - t0 for x in ends))
    peak, at, running, j = 0, 0, 0, 0
    n_end = len(ends)
    for s in starts:
        while j < n_end and ends[j] <= s:
            running -= 1
            j += 1
        running += 1
        if running > peak:
            peak, at = running, s
    return peak, at + t0


def utilization(data: RunData) -> dict[str, Any]:
    """Per-worker busy time and utilization, concurrency, and efficiency of a run.

    Args:
        data: The run's tables (``run.data``).

    Returns:
        A JSON-ready dict: ``span_s`` (first start → last end), ``busy_s`` (Σ execution),
        ``workers`` (by name: ``tasks``, ``busy_s``, ``uptime_s``, ``utilization``,
        ``uptime_from`` = ``"events"`` or ``"tasks"``), ``worker_count``,
        ``peak_concurrency``, ``peak_at`` (ns), ``avg_concurrency``, ``efficiency``
        (None when nothing ran).
    """
    first: int | None = None
    last: int | None = None
    busy: dict[str, list[float]] = {}  # worker -> [tasks, busy seconds]
    total = 0.0
    for t in data.tasks.values():
        se = t.run_span()
        if se is None:
            continue
        s, e = se
        d = max(0, e - s) / _NS
        total += d
        first = s if first is None or s < first else first
        last = e if last is None or e > last else last
        if t.worker is not None:
            w = busy.get(t.worker)
            if w is None:
                w = busy[t.worker] = [0, 0.0]
            w[0] += 1
            w[1] += d
    peak, peak_at = peak_concurrency(data.tasks.values())
    span = max(0, last - first) / _NS if first is not None and last is not None else 0.0
    joined: dict[str, int] = {}
    left: dict[str, int] = {}
    for typ, worker, when in data.worker_events:
        if when is None:
            continue
        if typ.endswith("WorkerAdded"):
            joined[worker] = min(joined.get(worker, when), when)
        else:
            left[worker] = max(left.get(worker, when), when)
    workers: dict[str, Any] = {}
    uptime_total = 0.0
    for name in sorted(set(busy) | set(joined)):
        n, b = busy.get(name, [0, 0.0])
        if name in joined:
            end = left.get(name, last if last is not None else joined[name])
            up = max(0, end - joined[name]) / _NS
            source = "events"
        else:
            up, source = span, "tasks"
        uptime_total += up
        workers[name] = {
            "tasks": int(n),
            "busy_s": b,
            "uptime_s": up,
            "utilization": b / up if up > 0 else None,
            "uptime_from": source,
        }
    unnamed = total - math.fsum(w[1] for w in busy.values())
    if not workers and peak:
        # No task named its worker: count the pool as wide as the most tasks run at once.
        uptime_total = span * peak
    elif unnamed > 1e-9:
        uptime_total += span  # tasks without a worker ran somewhere too: one more worker
    return {
        "span_s": span,
        "busy_s": total,
        "workers": workers,
        "worker_count": len(workers) or peak,
        "peak_concurrency": peak,
        "peak_at": peak_at,
        "avg_concurrency": total / span if span > 0 else None,
        "efficiency": total / uptime_total if uptime_total > 0 else None,
    }


def failure_groups(data: RunData, *, max_message: int = 500) -> list[dict[str, Any]]:
    """Failed tasks grouped by exception type, most frequent first, one example each.

    Each group: ``error_type``, ``count``, ``task_names`` (counts), and ``example`` — the
    first task to fail with that type: ``task_id``, ``task_name``, ``error_message``,
    ``stacktrace`` (None unless the run recorded one).
    """
    groups: dict[str, dict[str, Any]] = {}
    for t in data.tasks.values():
        if t.state != "failed":
            continue
        et = t.error_type or "Exception"
        g = groups.get(et)
        if g is None:
            g = groups[et] = {"error_type": et, "count": 0, "task_names": {}, "_first": t}
        g["count"] += 1
        names = g["task_names"]
        names[t.name or "task"] = names.get(t.name or "task", 0) + 1
        ex = g["_first"]
        if (t.ended or 0, t.task_id) < (ex.ended or 0, ex.task_id):
            g["_first"] = t
    out = []
    for g in sorted(groups.values(), key=lambda g: (-g["count"], g["error_type"])):
        ex = g.pop("_first")
        msg = ex.error_message
        g["example"] = {
            "task_id": ex.task_id,
            "task_name": ex.name,
            "error_message": msg[:max_message] if isinstance(msg, str) else msg,
            "stacktrace": data.stacktraces.get(g["error_type"]),
        }
        out.append(g)
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def format_utilization(report: dict[str, Any], *, max_rows: int = 20) -> str:
    """Render a report's ``utilization`` and ``failure_groups`` sections as text."""
    u = report.get("utilization")
    out: list[str] = []
    if u and u["busy_s"]:
        avg = u["avg_concurrency"]
        out.append(
            f"Utilization: efficiency {_pct(u['efficiency'])} over {u['worker_count']} worker(s), "
            f"concurrency peak {u['peak_concurrency']}, average {'-' if avg is None else f'{avg:.2f}'}, "
            f"Σ exec {format_duration(u['busy_s'])} in {format_duration(u['span_s'])}"
        )
        rows = sorted(u["workers"].items(), key=lambda kv: -kv[1]["busy_s"])
        if rows:
            more = f" (busiest {max_rows} of {len(rows)})" if len(rows) > max_rows else ""
            out.append(f"  {'worker' + more:<40} {'tasks':>7} {'busy':>10} {'uptime':>10} {'util':>7}")
            for name, w in rows[:max_rows]:
                label = name if len(name) <= 40 else name[:39] + "…"
                out.append(
                    f"  {label:<40} {w['tasks']:>7} {format_duration(w['busy_s']):>10} "
                    f"{format_duration(w['uptime_s']):>10} {_pct(w['utilization']):>7}"
                )
    groups = report.get("failure_groups") or []
    if groups:
        if out:
            out.append("")
        out.append("Failures by type:")
        for g in groups[:max_rows]:
            names = ", ".join(f"{n} ×{c}" for n, c in sorted(g["task_names"].items(), key=lambda kv: -kv[1])[:5])
            ex = g["example"]
            out.append(f"  {g['error_type']} ×{g['count']} ({names})")
            msg = f": {ex['error_message']}" if ex.get("error_message") else ""
            out.append(f"    e.g. {ex['task_id']} ({ex['task_name']}){msg}")
            if ex.get("stacktrace"):
                out.extend("      " + line for line in str(ex["stacktrace"]).rstrip().splitlines()[-12:])
    return "\n".join(out) + "\n" if out else ""
