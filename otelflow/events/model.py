"""Immutable event types carried on the otelflow bus.

Every event is a frozen :mod:`msgspec` struct: cheap to create (~0.15 µs), encoded to JSON
without an intermediate dict, and safe to share between threads. Times are integers in
nanoseconds since the Unix epoch: ``event_time`` is when the thing happened (spans take
their timestamps from it), ``emit_time`` is when the event entered the bus.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from typing import Any, ClassVar, Literal

import msgspec

__all__ = [
    "BlockEnded",
    "BlockStarted",
    "Event",
    "LogRecord",
    "ResourceUpdate",
    "SessionEnded",
    "SessionStarted",
    "TaskCanceled",
    "TaskCompleted",
    "TaskCreated",
    "TaskEvent",
    "TaskFailed",
    "TaskQueued",
    "TaskResolved",
    "TaskStarted",
    "TaskSubmitted",
    "TaskTerminal",
    "WorkflowEnded",
    "WorkflowStarted",
    "new_event_id",
    "now_ns",
]

now_ns = time.time_ns
"""Current wall-clock time in ns since the epoch: the clock every event uses."""


# Process-unique 64-bit event ids: a random 32-bit prefix and a counter. ``next()`` on an
# itertools.count is atomic under the GIL, so no lock is needed. A forked child draws a new
# prefix so its ids cannot collide with the parent's. Module globals, not an object: the id
# is made for every event, and this keeps it to one call.
_id_prefix = 0
_id_counter = itertools.count(1)


def _reseed_event_ids() -> None:
    global _id_prefix, _id_counter
    _id_prefix = random.getrandbits(31) << 32
    _id_counter = itertools.count(1)


_reseed_event_ids()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_event_ids)


def new_event_id() -> int:
    """Return a new event id, unique within this process and very likely across processes."""
    return _id_prefix | next(_id_counter)


class Event(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    omit_defaults=True,
    tag_field="type",
    tag=True,
    gc=False,  # events hold only scalars and plain containers: no cycles to collect
):
    """Base of every event.

    Fields whose value equals their default are left out of the JSON, so a field whose
    every value matters (a status, a scope) has no default.

    Attributes:
        event_id: Unique id of this event (see :func:`new_event_id`).
        event_time: When it happened, ns since the epoch.
        emit_time: When it entered the bus, ns since the epoch (0 until emitted).
        session_id: The telemetry session (one per ``start_telemetry()``).
        workflow_id: Enclosing workflow scope, if any.
        block_id: Innermost enclosing block scope, if any.
        task_id: The task this event is about, if any.
        task_name: The task's name (its type or function name), if any.
    """

    event_id: int = 0
    event_time: int = 0
    emit_time: int = 0
    session_id: str | None = None
    workflow_id: str | None = None
    block_id: str | None = None
    task_id: str | None = None
    task_name: str | None = None

    #: Field names every event has; user events may not redefine them.
    BASE_FIELDS: ClassVar[frozenset[str]] = frozenset(
        (
            "event_id",
            "event_time",
            "emit_time",
            "session_id",
            "workflow_id",
            "block_id",
            "task_id",
            "task_name",
        )
    )

    @property
    def event_name(self) -> str:
        """The event's type name, e.g. ``"TaskStarted"`` or ``"ml.Checkpoint"``."""
        return type(self).__struct_config__.tag  # type: ignore[return-value]


# --- session, workflow, block -------------------------------------------------------------


class SessionStarted(Event, frozen=True, kw_only=True, tag=True):
    """A telemetry session started (``start_telemetry()``)."""

    run_id: str | None = None
    service_name: str | None = None


class SessionEnded(Event, frozen=True, kw_only=True, tag=True):
    """A telemetry session is stopping; every later event is still drained."""


class WorkflowStarted(Event, frozen=True, kw_only=True, tag=True):
    """A ``workflow_scope()`` was entered."""

    workflow_name: str = ""


class WorkflowEnded(Event, frozen=True, kw_only=True, tag=True):
    """A ``workflow_scope()`` was exited (its span ends once its tasks have finished too)."""

    status: Literal["completed", "failed"]
    error_type: str | None = None


class BlockStarted(Event, frozen=True, kw_only=True, tag=True):
    """A ``block()`` was entered. ``parent_block_id`` is the enclosing block, if nested."""

    block_name: str = ""
    parent_block_id: str | None = None


class BlockEnded(Event, frozen=True, kw_only=True, tag=True):
    """A ``block()`` was exited."""

    status: Literal["completed", "failed"]
    error_type: str | None = None


# --- task lifecycle ---------------------------------------------------------------------------


class TaskEvent(Event, frozen=True, kw_only=True):
    """Base of the task lifecycle events (not emitted itself)."""


class TaskCreated(TaskEvent, frozen=True, kw_only=True, tag=True):
    """A task was defined. ``depends_on`` lists upstream task ids; ``backend`` names the engine.

    ``parent_span_id`` is set only when the task was created under a span other than its
    scope's own — inside another running task (a process-pool task, a Dask task) or a user
    span: the span its own span hangs under.
    """

    depends_on: tuple[str, ...] = ()
    backend: str | None = None
    attributes: dict[str, str | int | float | bool] | None = None
    parent_span_id: str | None = None


class TaskResolved(TaskEvent, frozen=True, kw_only=True, tag=True):
    """All of the task's dependencies are satisfied."""


class TaskSubmitted(TaskEvent, frozen=True, kw_only=True, tag=True):
    """The task was handed to the execution engine."""


class TaskQueued(TaskEvent, frozen=True, kw_only=True, tag=True):
    """The engine queued the task, waiting for a worker."""


class TaskStarted(TaskEvent, frozen=True, kw_only=True, tag=True):
    """The task began running (measured where it runs). ``worker`` names the worker."""

    worker: str | None = None
    pid: int | None = None


class TaskTerminal(TaskEvent, frozen=True, kw_only=True):
    """Base of the terminal task events. Resource use is filled in by process-pool engines.

    ``attributes`` are span attributes known only at the end (a result taken from a cache,
    the attempts a retried task made); they add to the ones given at ``TaskCreated``.
    """

    cpu_time_s: float | None = None
    peak_rss_bytes: int | None = None
    attributes: dict[str, str | int | float | bool] | None = None


class TaskCompleted(TaskTerminal, frozen=True, kw_only=True, tag=True):
    """The task finished successfully."""


class TaskFailed(TaskTerminal, frozen=True, kw_only=True, tag=True):
    """The task raised. ``error_type`` is the exception's qualified type name.

    ``stacktrace`` is the formatted traceback where it was captured (bounded in length).
    """

    error_type: str
    error_message: str = ""
    stacktrace: str | None = None


class TaskCanceled(TaskTerminal, frozen=True, kw_only=True, tag=True):
    """The task was canceled (before or while it ran)."""

    reason: str | None = None


# --- resources and logs -----------------------------------------------------------------------


class ResourceUpdate(Event, frozen=True, kw_only=True, tag=True):
    """One resource sample.

    ``scope`` says what was measured: ``"node"`` (the host), ``"gpu"`` (``device`` is the GPU
    index) or ``"process"`` (``device`` is ``"self"`` or ``"children"``). Utilizations are
    fractions (1.0 = 100 %; for processes, 1.0 = one core). Byte counts for disk and network
    are deltas since the previous sample.
    """

    scope: Literal["node", "gpu", "process"]
    node: str = ""
    device: str | None = None
    cpu_utilization: float | None = None
    memory_utilization: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    disk_read_bytes: int | None = None
    disk_write_bytes: int | None = None
    net_recv_bytes: int | None = None
    net_sent_bytes: int | None = None
    gpu_utilization: float | None = None
    pid: int | None = None


class LogRecord(Event, frozen=True, kw_only=True, tag=True):
    """A Python ``logging`` record captured into the run (see ``otelflow.capture_logging``).

    ``message`` is the formatted message and ``template`` the format string. ``attributes``
    holds the record's ``extra={...}`` fields and ``attribute_types`` each one's JSON type
    (``string``, ``integer``, ``number``, ``boolean``, ``null``, ``array``, ``object``;
    ``repr:<type>`` for a value that was stringified). ``trace_id``/``span_id`` are the
    current span's (the task's inside a task, else the session's); ``task_id`` the task's.
    """

    level: str = ""
    logger: str = ""
    message: str = ""
    template: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    process: int | None = None
    thread: str | None = None
    code: str | None = None
    attributes: dict[str, Any] | None = None
    attribute_types: dict[str, str] | None = None
    exception_type: str | None = None
    exception_message: str | None = None
    stacktrace: str | None = None


LIFECYCLE_EVENTS: tuple[type[Event], ...] = (
    TaskCreated,
    TaskResolved,
    TaskSubmitted,
    TaskQueued,
    TaskStarted,
    TaskCompleted,
    TaskFailed,
    TaskCanceled,
)
BUILTIN_EVENTS: tuple[type[Event], ...] = (
    SessionStarted,
    SessionEnded,
    WorkflowStarted,
    WorkflowEnded,
    BlockStarted,
    BlockEnded,
    *LIFECYCLE_EVENTS,
    ResourceUpdate,
    LogRecord,
)
