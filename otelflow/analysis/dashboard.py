"""The run dashboard: one PNG that shows how a run went, at 10 tasks and at 10⁵.

Panels (time is seconds since the first task was created):

1. **Workflow Gantt** — one row per workflow; per stage (task name) a bar from its first
   start to its last end, coloured by task name, over a light band from its first
   creation to its first start (waiting for dependencies and workers).
2. **Execution per stage per workflow** — Σ execution of each stage, stacked.
3. **Workflow concurrency** — workflows running (and tasks running) over time.
4. **Completion throughput** — tasks finished per second.
5. **End-to-end latency** — the distribution of workflow durations (task lifetimes when
   the run has fewer than 5 workflows), with mean and median.
6. **Stage × time occupancy** — mean tasks of each stage running in each time bin.
7. **Resources** — CPU, memory and GPU utilization of the nodes, when sampled.

Every panel aggregates (per workflow and stage, or per time bin), so the number of
shapes drawn does not grow with the number of tasks; more than ``max_workflows``
workflows show the first ones in the Gantt and stacked panels, and the title says so.
"""

from __future__ import annotations

import math
import os
import statistics
from array import array
from collections.abc import Sequence
from pathlib import Path

from otelflow.analysis.plots import _matplotlib
from otelflow.analysis.reader import Run

__all__ = ["plot_dashboard"]

_NS = 1e9
_PALETTE = [
    "#4C72B0", "#55A868", "#8172B2", "#CCB974", "#64B5CD", "#DD8452",
    "#937860", "#DA8BC3", "#8C8C8C", "#2A9D8F", "#E9C46A", "#6D597A",
]  # fmt: skip
_WAIT = "#D5DBE0"
_MAX_STAGES = 12


class _Stage:
    __slots__ = ("created", "end", "exec_s", "resolved", "start")

    def __init__(self) -> None:
        self.created: int | None = None
        self.resolved: int | None = None
        self.start: int | None = None
        self.end: int | None = None
        self.exec_s = 0.0


def _lo(a: int | None, b: int | None) -> int | None:
    return b if a is None or (b is not None and b < a) else a


def _hi(a: int | None, b: int | None) -> int | None:
    return b if a is None or (b is not None and b > a) else a


def plot_dashboard(
    run: Run,
    output: str | os.PathLike[str],
    *,
    max_workflows: int = 40,
    bins: int = 120,
    dpi: int = 100,
) -> Path:
    """Draw the run dashboard (see the module docstring) and save it as a PNG.

    Args:
        run: The run.
        output: The PNG file to write (its directory must exist).
        max_workflows: Rows of the Gantt and bars of the stacked panel (the first
            workflows by start); every other panel counts all of them.
        bins: Time bins of the throughput, concurrency and occupancy panels.
        dpi: Resolution.

    Returns:
        The path written.

    Raises:
        PlotDependencyError: matplotlib is not installed.
    """
    Figure, FigureCanvasAgg = _matplotlib()
    data = run.data
    tasks = data.tasks
    origin: int | None = None
    until: int | None = None
    for t in tasks.values():
        origin = _lo(origin, t.created if t.created is not None else t.started)
        until = _hi(until, t.ended if t.ended is not None else t.started)
    if origin is None:
        origin = run.start_time or data.first_time or 0
    until = _hi(until, origin + 1) or origin + 1
    span = (until - origin) / _NS
    bins = max(10, min(bins, 2 * len(tasks)))  # a 10-task run gets wide bins, not spikes
    width = span / bins

    # One pass: stages per workflow, per-bin counts, latencies.
    stage_count: dict[str, int] = {}
    for t in tasks.values():
        stage_count[t.name or "task"] = stage_count.get(t.name or "task", 0) + 1
    stages = sorted(stage_count, key=lambda n: -stage_count[n])[:_MAX_STAGES]
    if len(stage_count) > _MAX_STAGES:
        stages.append("(other)")
    color = {s: _PALETTE[i % len(_PALETTE)] for i, s in enumerate(stages)}
    color["(other)"] = "#BBBBBB"
    per_wf: dict[str, dict[str, _Stage]] = {}
    done = [0] * bins
    running = [0.0] * bins
    occupancy = {s: [0.0] * bins for s in stages}
    lifetimes: array[float] = array("d")  # 8 bytes a task, not a float object each

    def add_busy(row: list[float], a: float, b: float) -> None:
        i = min(int(a / width), bins - 1)
        while a < b and i < bins:
            edge = (i + 1) * width
            row[i] += (min(b, edge) - a) / width
            a = edge
            i += 1

    for t in tasks.values():
        name = t.name or "task"
        stage = name if name in color else "(other)"
        wf = t.workflow_name or t.workflow_id or "(no workflow)"
        wid = t.workflow_id or wf
        st = per_wf.setdefault(wid, {}).setdefault(stage, _Stage())
        st.created = _lo(st.created, t.created)
        st.resolved = _hi(st.resolved, t.resolved)  # the stage waited until its last task was ready
        st.start = _lo(st.start, t.started)
        st.end = _hi(st.end, t.ended)
        st.exec_s += t.execution_s or 0.0
        if t.ended is not None:
            done[min(int((t.ended - origin) / _NS / width), bins - 1)] += 1
            if t.created is not None:
                lifetimes.append(max(0, t.ended - t.created) / _NS)
        if t.started is not None:
            a = (t.started - origin) / _NS
            b = (t.ended - origin) / _NS if t.ended is not None else span
            if b > a:
                add_busy(running, a, b)
                add_busy(occupancy[stage], a, b)

    # Workflows: their scope times where recorded, else their tasks' span.
    wf_rows: list[tuple[str, str, int, int]] = []  # (id, label, start, end)
    for wid, sts in per_wf.items():
        sc = data.workflows.get(wid)
        starts = [s.created if s.created is not None else s.start for s in sts.values()]
        ends = [s.end for s in sts.values() if s.end is not None]
        begin = sc.start if sc is not None and sc.start is not None else min((x for x in starts if x), default=None)
        end = sc.end if sc is not None and sc.end is not None else max(ends, default=None)
        if begin is None or end is None:
            continue
        label = (sc.name if sc is not None and sc.name else None) or wid
        wf_rows.append((wid, label, begin, max(begin, end)))
    wf_rows.sort(key=lambda r: (r[2], r[0]))
    shown = wf_rows[:max_workflows]
    wf_latency = [(e - s) / _NS for _, _, s, e in wf_rows]
    wf_running = [0.0] * bins
    for _, _, s, e in wf_rows:
        add_busy(wf_running, (s - origin) / _NS, (e - origin) / _NS)

    samples = _resources(run, origin)
    n_rows = 4
    gantt_h = min(max(2.2, 0.22 * len(shown) + 1.0), 10.0)
    fig = Figure(figsize=(15, gantt_h + 3.2 * (n_rows - 1) + 0.9), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(n_rows, 2, height_ratios=[gantt_h] + [3.0] * (n_rows - 1))
    more = f" — first {len(shown)} of {len(wf_rows)} workflows" if len(wf_rows) > len(shown) else ""
    fig.suptitle(
        f"otelflow run {run.run_id} — {len(tasks)} tasks, {len(wf_rows)} workflows, {span:.3g} s{more}", fontsize=12
    )

    # 1. Workflow Gantt.
    ax = fig.add_subplot(gs[0, :])
    for row, (wid, _label, _s, _e) in enumerate(shown):
        # Stages that overlap in time (interleaved tasks) each get a slice of the row.
        drawn = [(stage, st) for stage, st in per_wf[wid].items() if st.start is not None]
        h = 0.8 / max(1, len(drawn))
        for k, (stage, st) in enumerate(sorted(drawn, key=lambda kv: kv[1].start or 0)):
            assert st.start is not None
            y = row - 0.4 + k * h
            x0 = (st.start - origin) / _NS
            x1 = ((st.end if st.end is not None else until) - origin) / _NS
            if st.created is not None and st.resolved is not None and st.created < st.resolved:
                c0, c1 = (st.created - origin) / _NS, (min(st.resolved, st.start) - origin) / _NS
                ax.broken_barh([(c0, c1 - c0)], (y + h * 0.3, h * 0.4), facecolors=_WAIT, edgecolors="none")
            ax.broken_barh([(x0, max(x1 - x0, span / 2000))], (y + h * 0.05, h * 0.9), facecolors=color[stage])
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([_clip(label) for _, label, _, _ in shown], fontsize=8 if len(shown) < 25 else 6)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.set_xlim(0, span)
    ax.set_title(
        "Workflow Gantt: stages by task name (light band: dependency wait, first created → last resolved)",
        fontsize=10,
        loc="left",
    )
    ax.set_xlabel("seconds since start")
    from matplotlib.patches import Patch

    handles = [Patch(color=color[s], label=s) for s in stages] + [Patch(color=_WAIT, label="waiting")]
    ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, ncols=min(7, len(handles)))

    # 2. Execution per stage per workflow (stacked).
    ax = fig.add_subplot(gs[1, 0])
    xs = list(range(len(shown)))
    bottom = [0.0] * len(shown)
    for stage in stages:
        vals = [per_wf[wid].get(stage, _Stage()).exec_s for wid, _, _, _ in shown]
        if any(vals):
            ax.bar(xs, vals, bottom=bottom, color=color[stage], label=stage, width=0.8)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xticks(xs)
    ax.set_xticklabels([_clip(label, 12) for _, label, _, _ in shown], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("Σ execution (s)")
    ax.set_title("Execution time per stage per workflow", fontsize=10, loc="left")

    # 3. Concurrency.
    ax = fig.add_subplot(gs[1, 1])
    edges = [i * width for i in range(bins + 1)]
    ax.stairs(wf_running, edges, color="#8172B2", label="workflows running", linewidth=1.5)
    ax.stairs(running, edges, color="#4C72B0", label="tasks running", linewidth=1.0, alpha=0.8)
    ax.set_ylim(bottom=0)
    ax.set_xlim(0, span)
    ax.set_ylabel("mean running per bin")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Concurrency over time", fontsize=10, loc="left")

    # 4. Throughput.
    ax = fig.add_subplot(gs[2, 0])
    ax.stairs([d / width for d in done], edges, fill=True, color="#55A868", alpha=0.8)
    ax.set_xlim(0, span)
    ax.set_ylabel("tasks finished / s")
    ax.set_xlabel("seconds since start")
    ax.set_title(f"Completion throughput ({sum(done)} tasks)", fontsize=10, loc="left")

    # 5. Latency distribution.
    ax = fig.add_subplot(gs[2, 1])
    values: Sequence[float]
    values, what = (wf_latency, "workflow") if len(wf_latency) >= 5 else (lifetimes, "task (created → end)")
    if values:
        edges_h, counts, log = _histogram(values, min(50, max(5, int(math.sqrt(len(values))))))
        ax.stairs(counts, edges_h, fill=True, color="#64B5CD", edgecolor="white")
        if log:
            ax.set_xscale("log")
        mean, median = statistics.fmean(values), statistics.median(values)
        ax.axvline(mean, color="#C44E52", linestyle="--", label=f"mean {mean:.3g} s")
        ax.axvline(median, color="#333333", linestyle=":", label=f"median {median:.3g} s")
        ax.legend(fontsize=8)
    ax.set_xlabel("seconds (log scale)" if values and ax.get_xscale() == "log" else "seconds")
    ax.set_ylabel("count")
    ax.set_title(f"End-to-end latency per {what} (n={len(values)})", fontsize=10, loc="left")

    # 6. Stage × time occupancy (the whole last row when there are no resource samples).
    target = fig.add_subplot(gs[3, 0] if samples else gs[3, :])
    rows = [occupancy[s] for s in stages]
    im = target.imshow(rows, aspect="auto", cmap="viridis", extent=(0, span, len(stages) - 0.5, -0.5))
    target.set_yticks(range(len(stages)))
    target.set_yticklabels([_clip(s, 18) for s in stages], fontsize=8)
    target.set_xlabel("seconds since start")
    target.set_title("Stage × time occupancy (mean tasks running)", fontsize=10, loc="left")
    fig.colorbar(im, ax=target, pad=0.01)

    # 7. Resources.
    if samples:
        ax = fig.add_subplot(gs[3, 1])
        for key, label, col in (
            ("cpu_utilization", "CPU", "#4C72B0"),
            ("memory_utilization", "memory", "#DD8452"),
            ("gpu_utilization", "GPU", "#55A868"),
        ):
            pts = samples.get(key)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] * 100 for p in pts], label=label, color=col, linewidth=1.2)
        ax.set_ylim(0, 105)
        ax.set_xlim(0, max(span, max((p[0] for v in samples.values() for p in v), default=span)))
        ax.set_ylabel("% utilization")
        ax.set_xlabel("seconds since start")
        ax.legend(fontsize=8, loc="upper right")
        ax.set_title("Resources (node mean)", fontsize=10, loc="left")
    path = Path(output)
    fig.savefig(path, format="png")
    return path


def _histogram(values: Sequence[float], n: int) -> tuple[list[float], list[int], bool]:
    """``n`` bins over [min, max] and the count in each (no array copies); the bins are
    log-spaced (third item True) when the values span more than two decades."""
    lo, hi = min(values), max(values)
    log = lo > 0 and hi / lo > 100
    if log:
        a, b = math.log10(lo), math.log10(hi)
        width = (b - a) / n or 1.0
        edges = [10 ** (a + i * width) for i in range(n + 1)]
    else:
        a, width = lo, (hi - lo) / n or 1.0
        edges = [lo + i * width for i in range(n + 1)]
    counts = [0] * n
    log10 = math.log10
    for v in values:
        x = log10(v) if log and v > 0 else v
        counts[max(0, min(n - 1, int((x - a) / width)))] += 1
    return edges, counts, log


def _resources(run: Run, origin: int) -> dict[str, list[tuple[float, float]]]:
    """Node utilization samples over time, averaged across nodes per sample time."""
    if not run.data.event_counts.get("ResourceUpdate"):
        return {}
    out: dict[str, list[tuple[float, float]]] = {}
    for ev in run.events(types="ResourceUpdate"):
        if ev.get("scope") not in ("node", "gpu"):
            continue
        t = ev.get("event_time")
        if not isinstance(t, int):
            continue
        x = (t - origin) / _NS
        for key in ("cpu_utilization", "memory_utilization", "gpu_utilization"):
            v = ev.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(key, []).append((x, float(v)))
    return out


def _clip(s: str, n: int = 28) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"
