"""Trace and span ids, and the W3C ``traceparent`` carrier.

A task's span id is derived from the session's trace id and the task id (BLAKE2b, 8
bytes), so any process that knows both — the submitting side building a carrier for a
worker, or the dispatcher linking a task to an upstream task that finished long ago —
computes the same id with no shared table. Task ids must therefore be unique within a
session.
"""

from __future__ import annotations

import random
from hashlib import blake2b

__all__ = [
    "new_span_id",
    "new_trace_id",
    "parse_traceparent",
    "task_span_id",
    "traceparent",
    "workflow_trace_id",
]


def new_trace_id() -> int:
    return random.getrandbits(128) or 1


def new_span_id() -> int:
    return random.getrandbits(64) or 1


def task_span_id(trace_id: int, task_id: str) -> int:
    """Return the span id of task ``task_id`` in the trace ``trace_id`` (never 0)."""
    digest = blake2b(task_id.encode(), digest_size=8, key=trace_id.to_bytes(16, "big")).digest()
    return int.from_bytes(digest, "big") or 1


def workflow_trace_id(session_trace_id: int, workflow_id: str) -> int:
    """The trace id of workflow ``workflow_id`` with a trace per workflow (never 0).

    Derived like task span ids, so the submitting side, a worker and the dispatcher agree
    with no shared table.
    """
    key = session_trace_id.to_bytes(16, "big")
    digest = blake2b(b"workflow\x00" + workflow_id.encode(), digest_size=16, key=key).digest()
    return int.from_bytes(digest, "big") or 1


def traceparent(trace_id: int, span_id: int, sampled: bool = True) -> str:
    """Format a W3C ``traceparent`` header value."""
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def parse_traceparent(value: str) -> tuple[int, int] | None:
    """Parse a ``traceparent`` into ``(trace_id, span_id)``; None if malformed."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id = int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace_id, span_id
