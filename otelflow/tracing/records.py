"""What the trace tree keeps per task and per scope while they are in flight."""

from __future__ import annotations

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


class TaskRec:
    """One task in flight."""

    __slots__ = (
        "attributes",
        "backend",
        "counts",
        "created",
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
        "worker",
        "workflow",
    )
