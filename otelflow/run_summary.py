"""What ``Telemetry.summary()`` returns: its shape (TypedDicts) and how it is put together.

The numbers come from the running aggregates (:mod:`otelflow.metrics.recorder`), never from
stored events, so a summary costs the same at ten tasks and at a million. The loss counts in
``dropped`` come from every stage that can lose something (bus, subscribers, run file,
exporters, integrations), so a user can tell whether a run's record is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

from otelflow.events.model import now_ns

if TYPE_CHECKING:
    from otelflow.bus.dispatcher import Dispatcher
    from otelflow.bus.queue import EventBus
    from otelflow.metrics.recorder import MetricRecorder
    from otelflow.sinks.jsonl import JsonlWriter

__all__ = ["DurationStats", "Summary", "TaskCounts", "build_summary", "dropped_counts"]


class TaskCounts(TypedDict, total=False):
    """``summary()["tasks"]``: cumulative transitions, and what is running or queued now."""

    created: int
    resolved: int
    submitted: int
    queued: int
    started: int
    completed: int
    failed: int
    canceled: int
    running: int
    queued_now: int
    incomplete: int


class DurationStats(TypedDict):
    """Streaming statistics of one duration (seconds); None where nothing was observed."""

    count: int
    mean: float | None
    min: float | None
    max: float | None
    p50: float | None
    p95: float | None


class Summary(TypedDict, total=False):
    """``Telemetry.summary()``. Keys are absent only for a disabled telemetry (then just the ids)."""

    run_id: str
    run_dir: str | None
    session_id: str
    trace_id: str
    enabled: bool
    tasks: TaskCounts
    duration_s: DurationStats
    dependency_wait_s: DurationStats
    dispatch_wait_s: DurationStats
    queue_wait_s: DurationStats
    scheduling_wait_s: DurationStats
    by_task_name: dict[str, DurationStats]
    workflows: dict[str, dict[str, Any]]
    resources: dict[str, dict[str, Any]]
    elapsed_s: float
    dropped: dict[str, Any]
    gpu: str


def build_summary(
    ids: dict[str, Any],
    recorder: MetricRecorder | None,
    start_time: int,
    end_time: int | None,
    dropped: Callable[[], dict[str, Any]],
    monitor: Any = None,
) -> Summary:
    """The summary from the session's ``ids`` (run/session/trace ids, run dir, enabled), its
    running aggregates, its times and its loss counts. Any thread."""
    base: dict[str, Any] = dict(ids)
    if recorder is None:
        base.update(tasks={}, dropped={}, workflows={}, resources={})
        return base  # type: ignore[return-value]
    base.update(recorder.summary())
    if start_time:
        base["elapsed_s"] = ((end_time or now_ns()) - start_time) / 1e9
    base["dropped"] = dropped()
    if monitor is not None:
        try:
            base["gpu"] = str(monitor.gpu_status())
        except Exception:  # noqa: BLE001 - a summary never fails on a monitor
            pass
    return base  # type: ignore[return-value]


def dropped_counts(
    *,
    bus: EventBus | None,
    dispatcher: Dispatcher | None,
    jsonl: JsonlWriter | None,
    tree: Any,
    counted: dict[str, int],
    export_failures: int,
    export_failures_by_signal: dict[str, int],
) -> dict[str, Any]:
    """``summary()["dropped"]``: everything that could not be recorded, by where it was lost.

    Args:
        counted: What the session counted itself (invalid emits, removed subscribers' losses,
            log records, live-view misses, what integrations reported with ``count_dropped``).
    """
    subs = dispatcher.subscribers if dispatcher is not None else ()
    out: dict[str, Any] = {
        # `is not None`: an empty EventBus is falsy (it has __len__)
        "events": bus.dropped if bus is not None else 0,
        "throttled_s": round(bus.throttled_ns / 1e9, 6) if bus is not None else 0.0,
        "invalid_emits": counted.pop("invalid_emits", 0),
        "subscriber_events": sum(s.dropped for s in subs) + counted.pop("gone_subscriber_events", 0),
        "subscriber_errors": sum(s.errors for s in subs) + counted.pop("gone_subscriber_errors", 0),
        "jsonl_lines_lost": jsonl.lines_lost if jsonl else 0,
        "jsonl_write_errors": jsonl.write_errors if jsonl else 0,
        "sanitized_values": jsonl.sanitized if jsonl else 0,
        "late_events": tree.late_events if tree else 0,
        "duplicate_task_ids": tree.duplicate_tasks if tree else 0,
        "internal_errors": dispatcher.internal_errors if dispatcher else 0,
    }
    out.update(counted)
    out["export_failures"] = export_failures
    for signal, n in export_failures_by_signal.items():
        out[f"export_failures_{signal}"] = n  # so a user can tell whether the trace is complete
    return out
