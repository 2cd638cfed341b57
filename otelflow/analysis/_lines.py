"""Typed views of run-directory lines, decoded with only the fields the tables need.

``collect`` decodes each line straight into one of these :mod:`msgspec` structs (a tagged
union on ``section``): unknown fields are skipped by the parser without building Python
objects, which is what makes reading a 10⁶-task run fast and small. Fields whose value is
free-form (user attributes) are kept as :class:`msgspec.Raw` and decoded only if used.

A line that does not fit (a field of an unexpected type, a section otelflow does not
write) is decoded as a plain dict and converted field by field by :func:`lenient`, so one
odd value costs that value, not the line.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

__all__ = ["AnyLine", "EventLine", "LogLine", "MetricLine", "SpanAttrs", "SpanLine", "decoder", "lenient"]

_Strs = list[str] | None


class EventLine(msgspec.Struct, tag_field="section", tag="event"):
    """An event line: lifecycle, scope, resource and user events."""

    type: str | None = None
    event_time: int | None = None
    task_id: str | None = None
    task_name: str | None = None
    workflow_id: str | None = None
    block_id: str | None = None
    # TaskCreated
    depends_on: _Strs = None
    backend: str | None = None
    attributes: msgspec.Raw | None = None
    # TaskStarted, ResourceUpdate
    worker: str | None = None
    pid: int | None = None
    # terminal events
    error_type: str | None = None
    error_message: str | None = None
    stacktrace: str | None = None
    reason: str | None = None
    cpu_time_s: float | None = None
    peak_rss_bytes: int | None = None
    # scopes
    workflow_name: str | None = None
    block_name: str | None = None
    parent_block_id: str | None = None
    status: str | None = None
    # ResourceUpdate
    scope: str | None = None
    node: str | None = None
    device: str | None = None
    cpu_utilization: float | None = None
    memory_utilization: float | None = None
    memory_used_bytes: int | None = None
    gpu_utilization: float | None = None


class SpanAttrs(msgspec.Struct, frozen=True):
    """The span attributes the tables read (the rest are skipped)."""

    task_id: str | None = msgspec.field(default=None, name="otelflow.task.id")
    task_name: str | None = msgspec.field(default=None, name="otelflow.task.name")
    task_status: str | None = msgspec.field(default=None, name="otelflow.task.status")
    workflow_id: str | None = msgspec.field(default=None, name="otelflow.workflow.id")
    workflow_name: str | None = msgspec.field(default=None, name="otelflow.workflow.name")
    block_id: str | None = msgspec.field(default=None, name="otelflow.block.id")
    block_name: str | None = msgspec.field(default=None, name="otelflow.block.name")
    backend: str | None = msgspec.field(default=None, name="otelflow.task.backend")
    worker: str | None = msgspec.field(default=None, name="otelflow.task.worker")
    depends_on: _Strs = msgspec.field(default=None, name="otelflow.task.depends_on")
    cpu_time_s: float | None = msgspec.field(default=None, name="otelflow.task.cpu_time_s")
    peak_rss_bytes: int | None = msgspec.field(default=None, name="otelflow.task.peak_rss_bytes")
    error_type: str | None = msgspec.field(default=None, name="error.type")
    stacktrace: str | None = msgspec.field(default=None, name="exception.stacktrace")
    created_time: int | None = msgspec.field(default=None, name="otelflow.task.created_time")
    # Engine-measured phases (``otelflow.phase.<name>_s``, e.g. an Academy action's): the
    # ones otelflow's integrations write. A typed struct reads named fields only.
    phase_send_s: float | None = msgspec.field(default=None, name="otelflow.phase.send_s")
    phase_queue_s: float | None = msgspec.field(default=None, name="otelflow.phase.queue_s")
    phase_execution_s: float | None = msgspec.field(default=None, name="otelflow.phase.execution_s")
    phase_response_s: float | None = msgspec.field(default=None, name="otelflow.phase.response_s")

    def phases(self) -> dict[str, float] | None:
        """The phase attributes that are set, by their attribute names; None if none is."""
        if (
            self.phase_send_s is None
            and self.phase_queue_s is None
            and self.phase_execution_s is None
            and self.phase_response_s is None
        ):
            return None
        return {
            f"otelflow.phase.{name}_s": v
            for name, v in (
                ("send", self.phase_send_s),
                ("queue", self.phase_queue_s),
                ("execution", self.phase_execution_s),
                ("response", self.phase_response_s),
            )
            if v is not None
        }


_NO_ATTRS = SpanAttrs()


class SpanLine(msgspec.Struct, tag_field="section", tag="span"):
    """A span line (session, workflow, block, task or user span)."""

    kind: str | None = None
    name: str | None = None
    span_id: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    status: str | None = None
    error_message: str | None = None
    attributes: SpanAttrs = _NO_ATTRS
    events: list[tuple[str, int]] | None = None
    links: _Strs = None


class MetricLine(msgspec.Struct, tag_field="section", tag="metric"):
    """A metric snapshot line; the tables only count them."""


class LogLine(msgspec.Struct, tag_field="section", tag="log"):
    """A log line; the tables only count them."""


AnyLine = EventLine | SpanLine | MetricLine | LogLine

_S = TypeVar("_S", bound=msgspec.Struct)


def decoder() -> msgspec.json.Decoder[AnyLine]:
    """A decoder of one line into its typed view."""
    return msgspec.json.Decoder(AnyLine)


def _convert(value: Any, typ: Any) -> Any:
    try:
        return msgspec.convert(value, typ)
    except (msgspec.ValidationError, TypeError):
        return None


def lenient(obj: dict[str, Any], cls: type[_S]) -> _S:
    """Build ``cls`` from a decoded dict, dropping (not failing on) ill-typed fields."""
    hints = {f.encode_name: (f.name, f.type) for f in msgspec.structs.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in obj.items():
        hint = hints.get(key)
        if hint is None or value is None:
            continue
        name, typ = hint
        if typ is msgspec.Raw or typ == (msgspec.Raw | None):
            kwargs[name] = msgspec.Raw(msgspec.json.encode(value))
        elif typ is SpanAttrs:
            kwargs[name] = lenient(value, SpanAttrs) if isinstance(value, dict) else _NO_ATTRS
        else:
            v = _convert(value, typ)
            if v is not None:
                kwargs[name] = v
    return cls(**kwargs)
