"""Pictures of a run: a task timeline (Gantt) and concurrency over time, as PNG.

matplotlib is optional (``pip install 'otelflow[plots]'``) and imported only when a plot
is drawn. Figures are drawn with the Agg canvas directly, never through ``pyplot``, so
plotting changes no global matplotlib state (backend, open figures) of the caller.

The timeline has one lane group per worker (``by="worker"``) or per workflow
(``by="workflow"``); tasks that overlap in a group get sub-lanes. A task is a light bar
from ready to started (scheduling wait) and a coloured bar from started to its end
(execution), coloured by final state. The concurrency plot steps through how many tasks
were running and how many were ready but waiting to start.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from otelflow.analysis._tables import TaskInfo
from otelflow.analysis.reader import Run
from otelflow.errors import OtelflowError

__all__ = ["PlotDependencyError", "concurrency", "plot_run", "timeline_lanes"]

_NS = 1e9
_COLORS = {
    "completed": "#4C72B0",
    "failed": "#C44E52",
    "canceled": "#8C8C8C",
    "running": "#DD8452",
    "incomplete": "#DD8452",
}
_WAIT_COLOR = "#D5DBE0"
_MAX_LABELS = 60


class PlotDependencyError(OtelflowError, ImportError):
    """matplotlib, needed for plots, is not installed."""


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotDependencyError(
            "Plotting needs matplotlib, which is not installed: pip install 'otelflow[plots]'."
        ) from exc
    return Figure, FigureCanvasAgg


def _task_list(tasks: Run | Mapping[str, TaskInfo] | Iterable[TaskInfo]) -> list[TaskInfo]:
    if isinstance(tasks, Run):
        return list(tasks.tasks().values())
    if isinstance(tasks, Mapping):
        return list(tasks.values())
    return list(tasks)


def _bounds(tasks: list[TaskInfo]) -> tuple[int, int]:
    starts = [t.created for t in tasks if t.created is not None]
    ends = [t.ended for t in tasks if t.ended is not None]
    ends += [t.started for t in tasks if t.started is not None]
    lo = min(starts) if starts else (min(ends) if ends else 0)
    hi = max(ends + starts) if ends or starts else lo
    return lo, hi


def _window(source: Any, items: list[TaskInfo]) -> tuple[int, int]:
    """Time zero and the end of the picture: the tasks' span, widened to the run's."""
    lo, hi = _bounds(items)
    if isinstance(source, Run):
        data = source.data
        ends = [t for t in (hi if items else None, source.end_time, data.session_end, data.last_time) if t]
        hi = max(ends) if ends else hi
        if not items:
            lo = source.start_time or data.first_time or hi
    return lo, max(lo, hi)


def concurrency(
    tasks: Run | Mapping[str, TaskInfo] | Iterable[TaskInfo],
    *,
    origin: int | None = None,
    until: int | None = None,
) -> tuple[list[float], list[int], list[int]]:
    """Running and waiting task counts over time, as a step series.

    Args:
        tasks: A run or its tasks.
        origin: Time zero, ns (default: the earliest task creation).
        until: Where tasks that never ended stop counting, ns (default: the end of the run
            when given a run, else the last task time).

    Returns:
        ``(times, running, waiting)``: ``times`` in seconds since ``origin``, and the number
        of tasks running, and ready but not yet started, from each time until the next.
    """
    items = _task_list(tasks)
    lo, hi = _window(tasks, items)
    origin = lo if origin is None else origin
    until = hi if until is None else until
    deltas: dict[int, list[int]] = {}

    def add(t: int, run: int, wait: int) -> None:
        d = deltas.get(t)
        if d is None:
            deltas[t] = [run, wait]
        else:
            d[0] += run
            d[1] += wait

    for t in items:
        end = t.ended if t.ended is not None else until
        ready = t.ready
        if t.started is not None:
            add(t.started, 1, 0)
            add(max(end, t.started), -1, 0)
            if ready is not None and ready <= t.started:
                add(ready, 0, 1)
                add(t.started, 0, -1)
        elif ready is not None and (t.resolved is not None or t.submitted is not None):
            add(ready, 0, 1)
            add(max(end, ready), 0, -1)
    times: list[float] = []
    running: list[int] = []
    waiting: list[int] = []
    r = w = 0
    for when in sorted(deltas):
        d = deltas[when]
        r += d[0]
        w += d[1]
        times.append((when - origin) / _NS)
        running.append(r)
        waiting.append(w)
    return times, running, waiting


def _group_of(t: TaskInfo, by: str) -> str | None:
    if by == "worker":
        if t.started is None:
            return None
        return t.worker or "(unknown worker)"
    if t.workflow_id is None:
        return "(no workflow)"
    name = t.workflow_name or t.workflow_id
    return name if name == t.workflow_id else f"{name} [{t.workflow_id}]"


def timeline_lanes(
    tasks: Run | Mapping[str, TaskInfo] | Iterable[TaskInfo], *, by: str = "worker"
) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """Assign every drawable task a lane: its group, then the first free sub-lane.

    Args:
        tasks: A run or its tasks.
        by: ``"worker"`` (tasks that started, grouped by worker) or ``"workflow"``.

    Returns:
        ``(groups, lane_of)``: groups in order with their number of sub-lanes, and the
        global lane index (0 = top) of each task id drawn.
    """
    if by not in ("worker", "workflow"):
        raise ValueError(f"by must be 'worker' or 'workflow', not {by!r}")
    items = _task_list(tasks)
    _, hi = _bounds(items)
    grouped: dict[str, list[TaskInfo]] = {}
    for t in items:
        g = _group_of(t, by)
        if g is None:
            continue
        grouped.setdefault(g, []).append(t)
    groups: list[tuple[str, int]] = []
    lane_of: dict[str, int] = {}
    base = 0
    for g in sorted(grouped, key=lambda k: (min(_begin(t, by) for t in grouped[k]), k)):
        free: list[tuple[int, int]] = []  # (end, sub-lane) of lanes in use
        n = 0
        for t in sorted(grouped[g], key=lambda t: (_begin(t, by), t.task_id)):
            begin = _begin(t, by)
            end = t.ended if t.ended is not None else hi
            if free and free[0][0] <= begin:
                _, lane = heapq.heappop(free)
            else:
                lane = n
                n += 1
            heapq.heappush(free, (max(end, begin), lane))
            lane_of[t.task_id] = base + lane
        groups.append((g, n))
        base += n
    return groups, lane_of


def _begin(t: TaskInfo, by: str) -> int:
    if by == "worker" and t.started is not None:
        return t.started
    for v in (t.ready, t.created, t.started, t.ended):
        if v is not None:
            return v
    return 0


def _draw_timeline(ax: Any, items: list[TaskInfo], by: str, origin: int, until: int) -> None:
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    groups, lane_of = timeline_lanes(items, by=by)
    polys: dict[str, list[list[tuple[float, float]]]] = {}

    def rect(color: str, x0: int, x1: int, y: int) -> None:
        a, b = (x0 - origin) / _NS, (max(x1, x0) - origin) / _NS
        if b - a <= 0:
            b = a + 1e-6
        polys.setdefault(color, []).append([(a, y - 0.4), (b, y - 0.4), (b, y + 0.4), (a, y + 0.4)])

    for t in items:
        lane = lane_of.get(t.task_id)
        if lane is None:
            continue
        end = t.ended if t.ended is not None else until
        state = t.state
        if by == "workflow" and t.ready is not None:
            rect(_WAIT_COLOR, t.ready, t.started if t.started is not None else end, lane)
        if t.started is not None:
            rect(_COLORS.get(state, _COLORS["running"]), t.started, end, lane)
    for color, verts in polys.items():
        ax.add_collection(PolyCollection(verts, facecolors=color, edgecolors="none"))
    total = sum(n for _, n in groups)
    ax.set_ylim(total - 0.5 if total else 0.5, -0.5)
    ax.set_xlim(0, max((until - origin) / _NS, 1e-6))
    step = max(1, len(groups) // _MAX_LABELS + (1 if len(groups) % _MAX_LABELS else 0))
    ticks, labels, y = [], [], 0
    for i, (g, n) in enumerate(groups):
        if i % step == 0:
            ticks.append(y + (n - 1) / 2)
            labels.append(g if len(g) <= 32 else g[:31] + "…")
        y += n
        if i < len(groups) - 1:
            ax.axhline(y - 0.5, color="#EEEEEE", linewidth=0.5)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylabel(by)
    handles = [Patch(color=_COLORS[s], label=s) for s in ("completed", "failed", "canceled", "running")]
    if by == "workflow":
        handles.insert(0, Patch(color=_WAIT_COLOR, label="waiting to start"))
    ax.legend(
        handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, ncols=len(handles), frameon=False
    )


def _resample(times: list[float], values: list[int], t0: float, t1: float, n: int) -> list[float]:
    """Time-weighted mean of a step series over ``n`` equal bins of [t0, t1].

    Steps shorter than a bin (a task ending a microsecond before the next starts) would
    otherwise draw as spikes that hide the shape.
    """
    width = (t1 - t0) / n
    acc = [0.0] * n
    for k, start in enumerate(times):
        end = times[k + 1] if k + 1 < len(times) else t1
        a, b = max(start, t0), min(end, t1)
        if b <= a or not values[k]:
            continue
        i = min(int((a - t0) / width), n - 1)
        while a < b and i < n:
            edge = t0 + (i + 1) * width
            seg = min(b, edge) - a
            acc[i] += seg * values[k]
            a = edge
            i += 1
    return [v / width for v in acc]


def _draw_concurrency(ax: Any, items: list[TaskInfo], origin: int, until: int, bins: int = 1000) -> None:
    times, running, waiting = concurrency(items, origin=origin, until=until)
    t1 = max((until - origin) / _NS, 1e-6)
    if times:
        edges = [t1 * i / bins for i in range(bins + 1)]
        ax.stairs(_resample(times, running, 0.0, t1, bins), edges, label="running", color=_COLORS["completed"])
        ax.stairs(
            _resample(times, waiting, 0.0, t1, bins), edges, label="ready, waiting to start", color=_COLORS["running"]
        )
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, ncols=2, frameon=False)
    ax.set_xlim(0, t1)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("tasks (mean per bin)")


def plot_run(
    run: Run | Mapping[str, TaskInfo] | Iterable[TaskInfo],
    output: str | os.PathLike[str],
    *,
    by: str = "worker",
    kind: str = "both",
    title: str | None = None,
    max_tasks: int = 100_000,
    dpi: int = 110,
) -> Path:
    """Draw a run's timeline and/or concurrency plot and save it as a PNG.

    Args:
        run: A run, or its tasks.
        output: The PNG file to write (its directory must exist).
        by: Timeline lanes per ``"worker"`` or per ``"workflow"``.
        kind: ``"timeline"``, ``"concurrency"`` or ``"both"`` (stacked, shared time axis).
        title: Figure title; default names the run.
        max_tasks: Draw at most this many tasks on the timeline (the longest running);
            the concurrency plot always counts all.
        dpi: Resolution.

    Returns:
        The path written.

    Raises:
        PlotDependencyError: matplotlib is not installed.
        ValueError: ``by`` or ``kind`` is not one of the values above.
    """
    if kind not in ("timeline", "concurrency", "both"):
        raise ValueError(f"kind must be 'timeline', 'concurrency' or 'both', not {kind!r}")
    if by not in ("worker", "workflow"):
        raise ValueError(f"by must be 'worker' or 'workflow', not {by!r}")
    Figure, FigureCanvasAgg = _matplotlib()
    items = _task_list(run)
    origin, until = _window(run, items)
    shown = items
    note = ""
    if len(items) > max_tasks:
        shown = heapq.nlargest(max_tasks, items, key=lambda t: (t.execution_s or 0.0, t.task_id))
        note = f" (longest {max_tasks} of {len(items)} tasks shown)"
    if title is None:
        title = f"otelflow run {run.run_id}" if isinstance(run, Run) else "otelflow run"
    n_lanes = 0
    if kind != "concurrency":
        groups, _ = timeline_lanes(shown, by=by)
        n_lanes = sum(n for _, n in groups)
    timeline_h = min(max(2.5, 0.18 * n_lanes + 1.2), 30.0)
    heights = {"timeline": [timeline_h], "concurrency": [2.8], "both": [timeline_h, 2.8]}[kind]
    fig = Figure(figsize=(12, sum(heights) + 0.8), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(heights), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    i = 0
    if kind != "concurrency":
        _draw_timeline(axes[i], shown, by, origin, until)
        axes[i].set_title(f"Tasks by {by}{note}", fontsize=9, loc="left")
        i += 1
    if kind != "timeline":
        _draw_concurrency(axes[i], items, origin, until)
        axes[i].set_title("Concurrency", fontsize=9, loc="left")
    axes[-1].set_xlabel("seconds since start")
    fig.suptitle(title, fontsize=11)
    path = Path(output)
    fig.savefig(path, format="png")
    return path
