"""Resource advice from the history of runs: what to request per task name.

For each task name, over every run in the runs directory: the p95 of the CPU a task used
(``cpu_time_s`` ÷ execution time, in cores) and the peak memory (the largest
``peak_rss_bytes``), both as the task's own process measured them (process-pool and
worker tasks report them on ``TaskCompleted``). The recommendation adds headroom:
CPU rounded up to a tenth of a core, memory up to a whole MiB.

Too little evidence gets a refusal, not a guess: fewer than ``min_runs`` runs or fewer
than ``min_tasks`` measured tasks of that name.
"""

from __future__ import annotations

import math
import os
from typing import Any

from otelflow.analysis.reader import list_runs, open_run

__all__ = ["advise", "format_advice"]

_MIB = 1024 * 1024


def _p95(values: list[float]) -> float:
    v = sorted(values)
    rank = 0.95 * (len(v) - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    return v[lo] + (v[hi] - v[lo]) * (rank - lo)


def advise(
    runs_dir: str | os.PathLike[str] | None = None,
    *,
    task: str | None = None,
    headroom: float = 0.2,
    min_runs: int = 2,
    min_tasks: int = 5,
) -> dict[str, Any]:
    """Recommend a CPU and memory request per task name from every run in ``runs_dir``.

    Args:
        runs_dir: The runs directory (default: ``$OTELFLOW_RUNS_DIR`` or ``./.otelflow/runs``).
        task: Only this task name.
        headroom: Added on top of the p95 CPU and the peak memory (0.2 = 20 %).
        min_runs: Runs that must hold measured tasks of a name before it is advised on.
        min_tasks: Measured tasks a name needs.

    Returns:
        ``{"runs", "headroom", "tasks": {name: advice}}``; an advice is either
        ``{"runs", "tasks", "cpu_p95_cores", "cpu_request_cores", "peak_rss_bytes",
        "memory_request_bytes"}`` or ``{"runs", "tasks", "refused": reason}``.
    """
    infos = list_runs(runs_dir)
    cpu: dict[str, list[float]] = {}
    rss: dict[str, int] = {}
    seen_in: dict[str, set[str]] = {}
    for info in infos:
        run = open_run(info.path)
        for t in run.tasks().values():
            name = t.name or "task"
            if task is not None and name != task:
                continue
            ex = t.execution_s
            measured = False
            if t.cpu_time_s is not None and ex:
                cpu.setdefault(name, []).append(t.cpu_time_s / ex)
                measured = True
            if t.peak_rss_bytes is not None:
                rss[name] = max(rss.get(name, 0), t.peak_rss_bytes)
                measured = True
            if measured:
                seen_in.setdefault(name, set()).add(info.run_id)
        del run  # one run's tables at a time
    names = [task] if task is not None else sorted(seen_in)
    out: dict[str, Any] = {}
    for name in names:
        runs = len(seen_in.get(name, ()))
        n = len(cpu.get(name, []))
        if runs < min_runs or n < min_tasks:
            why = (
                f"{runs} run(s) with measured '{name}' tasks; at least {min_runs} are needed"
                if runs < min_runs
                else f"{n} measured task(s); at least {min_tasks} are needed"
            )
            out[name] = {"runs": runs, "tasks": n, "refused": f"Not enough data: {why}."}
            continue
        p95 = _p95(cpu[name])
        peak = rss.get(name)
        out[name] = {
            "runs": runs,
            "tasks": n,
            "cpu_p95_cores": p95,
            "cpu_request_cores": math.ceil(p95 * (1 + headroom) * 10 - 1e-9) / 10,
            "peak_rss_bytes": peak,
            "memory_request_bytes": math.ceil(peak * (1 + headroom) / _MIB) * _MIB if peak else None,
        }
    return {"runs": len(infos), "headroom": headroom, "tasks": out}


def format_advice(a: dict[str, Any]) -> str:
    """Render :func:`advise` as text."""
    if not a["tasks"]:
        return (
            f"No task in the {a['runs']} run(s) measured its CPU time or memory (process-pool and "
            "worker tasks do); nothing to advise.\n"
        )
    out = [f"From {a['runs']} run(s), with {a['headroom'] * 100:g}% headroom:"]
    for name, adv in a["tasks"].items():
        if "refused" in adv:
            out.append(f"  {name}: {adv['refused']}")
            continue
        mem = adv["memory_request_bytes"]
        mem_s = "-" if mem is None else f"{mem / _MIB:.0f} MiB"
        peak = adv["peak_rss_bytes"]
        peak_s = "-" if peak is None else f"{peak / _MIB:.1f} MiB"
        out.append(
            f"  {name}: request {adv['cpu_request_cores']:g} CPU, {mem_s} memory "
            f"(p95 CPU {adv['cpu_p95_cores']:.2f} cores, peak RSS {peak_s}; {adv['tasks']} tasks in {adv['runs']} runs)"
        )
    return "\n".join(out) + "\n"
