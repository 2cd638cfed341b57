"""What the trace tree keeps per task and per scope while they are in flight."""

from __future__ import annotations

from typing import Any

# Task states, in lifecycle order.
CREATED, RESOLVED, SUBMITTED, QUEUED, STARTED = range(5)


class ScopeRec:
    """A workflow, block or the session, while its span is open."""

    __slots__ = (
        "counts",
        "end",
        "error_type",
        "exited",
        "id",
        "kind",
        "name",
        "open",
        "parent",
        "span_hex",
        "span_id",
        "start",
        "status",
        "task_header",
        "trace_hex",
        "trace_id",
        "workflow",
        "workflow_name",
    )

    def __init__(
        self, kind: str, id: str, name: str, span_id: int, parent: ScopeRec | None, start: int
    ) -> None:
        self.kind = kind
        self.id = id
        self.name = name
        self.span_id = span_id
        self.span_hex = f"{span_id:016x}"
        self.parent = parent
        self.start = start
        self.end = start
        self.exited = False
        self.open = 0
        self.status = "completed"
        self.error_type: str | None = None
        self.workflow_name: str | None = None
        self.counts = [0, 0, 0]  # completed, failed, canceled tasks directly or below
        # The trace it belongs to (the session's, or its workflow's with a trace per workflow).
        self.trace_id: int = parent.trace_id if parent is not None else 0
        self.trace_hex: str = parent.trace_hex if parent is not None else ""
        # Cached for the per-task path (set by the trace tree once the trace is known): the
        # enclosing workflow (itself for a workflow; None outside any), and the start of the
        # JSONL event-line header of a task in this scope, up to its span id.
        self.workflow: ScopeRec | None = None
        self.task_header = b""


class TaskRec:
    """One task in flight."""

    __slots__ = (
        "attributes",
        "backend",
        "counts",
        "created",
        "dep_traces",
        "dependents",
        "deps",
        "header",
        "id",
        "name",
        "parent_hex",
        "parent_id",
        "pending",
        "queued",
        "ready",
        "remote_ids",
        "resolved",
        "scope",
        "span_id",
        "started",
        "state",
        "submitted",
        "trace_id",
        "worker",
        "workflow",
    )

    # Filled by the trace tree when the task is created (no __init__: one less call per task).
    attributes: dict[str, Any] | None
    backend: str | None
    counts: list[int]
    created: int
    dep_traces: tuple[int, ...] | None
    dependents: list[TaskRec] | None
    deps: tuple[str, ...]
    header: bytes
    id: str
    name: str
    parent_hex: str
    parent_id: int
    pending: int
    queued: int
    ready: int  # the latest upstream end so far: TaskResolved's time
    remote_ids: tuple[str | None, str | None] | None
    resolved: int
    scope: ScopeRec
    span_id: int
    started: int
    state: int
    submitted: int
    trace_id: int
    worker: str | None
    workflow: ScopeRec | None
