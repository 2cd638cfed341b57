"""Events otelflow records about Dask tasks beyond the lifecycle (each attached to its task)."""

from __future__ import annotations

from otelflow.events import define_event

TaskAttempt = define_event(
    "dask.TaskAttempt",
    attempt=int,
    worker=(str | None, None),
    start_time=(int | None, None),
    end_time=(int | None, None),
    outcome=(str, ""),
)
"""One run of a task that ran more than once (a retry, or a worker lost under it).

``outcome`` is ``completed``, ``failed: <type>``, ``worker-lost`` or ``released``; times are
the worker's (ns since the epoch), ``start_time`` None when the attempt was lost before its
start reached the scheduler."""

TaskStolen = define_event("dask.TaskStolen", victim=(str, ""), thief=(str, ""))
"""Dask's work stealing moved the task from ``victim`` to ``thief`` before it ran."""

TaskTimes = define_event("dask.TaskTimes", worker=(str | None, None), seconds=(dict[str, float], {}))
"""Dask's own breakdown of a task's time on its worker besides compute (``transfer``,
``deserialize``, ``disk-read`` …), in seconds; recorded only when Dask reports any."""

__all__ = ["TaskAttempt", "TaskStolen", "TaskTimes"]
