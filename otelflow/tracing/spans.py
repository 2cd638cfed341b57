"""Finished spans: the JSONL span line and the OTel ``ReadableSpan`` for export processors.

A task span covers the task's *execution*: it starts at TaskStarted and ends at the
terminal event, so a trace viewer's bar and duration are the time the task ran (a task
that never started gets a zero-length span at its terminal time and
``otelflow.task.started=false``). The waits before it are attributes (created, resolved,
submitted and queued times; dependency, dispatch and queue wait in seconds, see
:mod:`otelflow.events.waits`) and the lifecycle steps are span events; with ``wait_spans`` a
sibling span ``wait <task name>`` covers creation → start.

Spans are built from the tree's records when a task or scope ends. The JSONL line is
encoded straight from the record; a ``ReadableSpan`` (~1.7 µs) is built only if an export
processor (OTLP, console, the user's) will take it — processors that say they are
refusing (a collector known to be down) only count it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from otelflow.events.model import TaskFailed
from otelflow.events.waits import dispatched_at

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor

    from otelflow.sinks.jsonl import JsonlWriter
    from otelflow.tracing.records import ScopeRec, TaskRec

_log = logging.getLogger("otelflow")

__all__ = ["SpanEmitter", "SpanLine"]


class SpanLine(msgspec.Struct, omit_defaults=True, tag_field="section", tag="span", gc=False):
    """One finished span as written to the JSONL run directory (``section: span``)."""

    trace_id: str
    span_id: str
    name: str
    kind: str
    start_time: int
    end_time: int
    status: str
    parent_span_id: str | None = None
    attributes: dict[str, Any] = {}
    events: list[tuple[str, int]] = []
    links: list[str] = []
    error_message: str | None = None
    error_stacktrace: str | None = None


class SpanEmitter:
    """Writes finished spans to the JSONL and hands them to export processors."""

    def __init__(
        self,
        *,
        trace_id: int,
        resource: Resource,
        jsonl: JsonlWriter | None,
        processors: Sequence[SpanProcessor],
        task_span_id: Callable[[str], int],
        sample_ratio: float = 1.0,
        version: str = "",
        wait_spans: bool = False,
    ) -> None:
        self.trace_id = trace_id
        self.wait_spans = wait_spans
        self.trace_hex = f"{trace_id:032x}"
        self.resource = resource
        self.jsonl = jsonl
        self.processors = tuple(processors)
        self.task_span_id = task_span_id
        # Processors that say when they would refuse a span (otelflow's OTLP ones while the
        # collector is known down): no span is built for them then, only counted. A
        # processor's answer must be a real bool; anything else (a mock) gets every span.
        self._refusable: tuple[Any, ...] = tuple(
            p
            for p in self.processors
            if isinstance(getattr(p, "otelflow_refusing", None), bool) and callable(getattr(p, "otelflow_refuse", None))
        )
        self._scope_info = InstrumentationScope("otelflow", version)
        self._sample_below = int(max(0.0, min(1.0, sample_ratio)) * (2**64 - 1))
        self._span_ctx_flags = TraceFlags(TraceFlags.SAMPLED)

    def task_span(self, rec: TaskRec, end: int, status: str, ev: Any) -> None:
        """Write and export the span of a task that reached ``status`` at ``end``."""
        attrs = self.task_attributes(rec, status, ev, end)
        if self.jsonl is not None:
            self._write_task_span(rec, end, status, ev, attrs)
        if self.processors:
            self._export_task_span(rec, end, status, ev, attrs)
        if self.wait_spans:
            self._wait_span(rec, end)

    def wait_span_id(self, task_id: str) -> int:
        """The span id of a task's ``wait`` span (derived, like the task's own)."""
        return self.task_span_id("wait\x00" + task_id)

    def _wait_span(self, rec: TaskRec, end: int) -> None:
        start = rec.created
        stop = min(rec.started, end) if rec.started else end
        stop = max(stop, start)
        name = "wait " + rec.name
        span_id = self.wait_span_id(rec.id)
        attrs: dict[str, Any] = {"otelflow.task.id": rec.id, "otelflow.task.name": rec.name}
        _add_waits(attrs, rec, end)
        task_hex = f"{rec.span_id:016x}"
        if self.jsonl is not None:
            self.jsonl.write_struct(
                SpanLine(
                    trace_id=f"{rec.trace_id:032x}",
                    span_id=f"{span_id:016x}",
                    parent_span_id=rec.parent_hex,
                    name=name,
                    kind="wait",
                    start_time=start,
                    end_time=stop,
                    status="completed",
                    attributes=attrs,
                    links=[task_hex],
                )
            )
        if self.processors and rec.span_id <= self._sample_below:
            refusing = self._refuse() if self._refusable else None
            if refusing is not None and len(refusing) == len(self.processors):
                return
            link = Link(SpanContext(rec.trace_id, rec.span_id, False, self._span_ctx_flags))
            self._export(
                name,
                span_id,
                rec.parent_id,
                start,
                stop,
                attrs,
                [],
                [link],
                Status(StatusCode.UNSET),
                refusing,
                trace_id=rec.trace_id,
            )

    def task_events(self, rec: TaskRec, end: int, status: str) -> list[tuple[str, int]]:
        events = [("TaskCreated", rec.created)]
        if rec.resolved:
            events.append(("TaskResolved", rec.resolved))
        if rec.submitted:
            events.append(("TaskSubmitted", rec.submitted))
        if rec.queued:
            events.append(("TaskQueued", rec.queued))
        if rec.started:
            events.append(("TaskStarted", rec.started))
        events.append(("Task" + status.capitalize(), end))
        return events

    def task_attributes(self, rec: TaskRec, status: str, ev: Any, end: int) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "otelflow.task.id": rec.id,
            "otelflow.task.name": rec.name,
            "otelflow.task.status": status,
            "otelflow.task.started": bool(rec.started),
        }
        _add_waits(attrs, rec, end)
        wf = rec.workflow
        if wf is not None:
            attrs["otelflow.workflow.id"] = wf.id
            attrs["otelflow.workflow.name"] = wf.name
        scope = rec.scope
        if scope.kind == "block":
            attrs["otelflow.block.id"] = scope.id
            attrs["otelflow.block.name"] = scope.name
        elif rec.remote_ids is not None:  # scopes entered in another process
            remote_wf, remote_blk = rec.remote_ids
            if remote_wf:
                attrs["otelflow.workflow.id"] = remote_wf
            if remote_blk:
                attrs["otelflow.block.id"] = remote_blk
        if rec.backend:
            attrs["otelflow.task.backend"] = rec.backend
        if rec.worker:
            attrs["otelflow.task.worker"] = rec.worker
        if rec.deps:
            attrs["otelflow.task.depends_on"] = tuple(rec.deps)
        if ev is not None:
            if type(ev) is TaskFailed:
                attrs["error.type"] = ev.error_type
            cpu = getattr(ev, "cpu_time_s", None)
            if cpu is not None:
                attrs["otelflow.task.cpu_time_s"] = cpu
            rss = getattr(ev, "peak_rss_bytes", None)
            if rss is not None:
                attrs["otelflow.task.peak_rss_bytes"] = rss
        if rec.attributes:
            for k, v in rec.attributes.items():
                attrs.setdefault(k, v)
        end_attrs = getattr(ev, "attributes", None)
        if end_attrs:  # known only at the end (TaskTerminal.attributes)
            for k, v in end_attrs.items():
                attrs.setdefault(k, v)
        return attrs

    def _write_task_span(self, rec: TaskRec, end: int, status: str, ev: Any, attrs: dict[str, Any]) -> None:
        assert self.jsonl is not None
        scope = rec.scope
        failed = type(ev) is TaskFailed
        self.jsonl.write_struct(
            SpanLine(
                trace_id=scope.trace_hex if rec.trace_id == scope.trace_id else f"{rec.trace_id:032x}",
                span_id=f"{rec.span_id:016x}",
                parent_span_id=rec.parent_hex,
                name=rec.name,
                kind="task",
                start_time=task_span_start(rec, end),
                end_time=end,
                status=status,
                attributes=attrs,
                events=self.task_events(rec, end, status),
                links=self._link_texts(rec) if rec.deps else [],  # most tasks have no upstream
                error_message=ev.error_message if failed else None,
                error_stacktrace=ev.stacktrace if failed else None,
            )
        )

    def _export_task_span(self, rec: TaskRec, end: int, status: str, ev: Any, attrs: dict[str, Any]) -> None:
        if rec.span_id > self._sample_below:
            return
        refusing = self._refuse() if self._refusable else None
        if refusing is not None and len(refusing) == len(self.processors):
            return  # every processor refused (and counted) it: nothing to build
        trace_id = rec.trace_id
        flags = self._span_ctx_flags
        dep_traces = rec.dep_traces
        links = [
            Link(SpanContext(dep_traces[i] if dep_traces else trace_id, self.task_span_id(d), False, flags))
            for i, d in enumerate(rec.deps)
        ]
        events = [SpanEvent(name, attributes=None, timestamp=t) for name, t in self.task_events(rec, end, status)]
        if type(ev) is TaskFailed:
            ex_attrs = {"exception.type": ev.error_type, "exception.message": ev.error_message}
            if ev.stacktrace:
                ex_attrs["exception.stacktrace"] = ev.stacktrace
            events.append(SpanEvent("exception", attributes=ex_attrs, timestamp=end))
            span_status = Status(StatusCode.ERROR, f"{ev.error_type}: {ev.error_message}")
        else:
            span_status = Status(StatusCode.UNSET)
        self._export(
            rec.name,
            rec.span_id,
            rec.parent_id,
            task_span_start(rec, end),
            end,
            attrs,
            events,
            links,
            span_status,
            refusing,
            trace_id=trace_id,
        )

    def _link_texts(self, rec: TaskRec) -> list[str]:
        """JSONL links of a task: ``<span id>``, or ``<trace id>:<span id>`` in another trace."""
        dep_traces = rec.dep_traces
        if not dep_traces:
            return [f"{self.task_span_id(d):016x}" for d in rec.deps]
        own = rec.trace_id
        return [
            f"{self.task_span_id(d):016x}" if t == own else f"{t:032x}:{self.task_span_id(d):016x}"
            for d, t in zip(rec.deps, dep_traces, strict=True)
        ]

    def _refuse(self) -> list[SpanProcessor] | None:
        """Have each processor that refuses spans right now count this one; return those.

        None, without building anything, when none refuses (the usual case). Each
        processor's ``otelflow_refusing`` is read once, so it gets exactly one of
        ``otelflow_refuse()`` here or ``on_end()`` in :meth:`_export`: its count of refused
        spans is what ``on_end`` would have made it.
        """
        refusable = self._refusable
        for first in refusable:
            if first.otelflow_refusing:
                break
        else:
            return None
        refusing = [first]
        for proc in refusable[refusable.index(first) + 1 :]:
            if proc.otelflow_refusing:
                refusing.append(proc)
        for proc in refusing:
            try:
                proc.otelflow_refuse()
            except Exception as exc:  # noqa: BLE001 - one processor must not stop the others
                _log.warning("otelflow span processor %r failed: %s", proc, exc)
        return refusing

    def _export(
        self,
        name: str,
        span_id: int,
        parent_span_id: int | None,
        start: int,
        end: int,
        attributes: dict[str, Any],
        events: list[SpanEvent],
        links: list[Link],
        status: Status,
        refusing: list[SpanProcessor] | None = None,
        *,
        trace_id: int,
    ) -> None:
        """Build the span and hand it to every processor but those in ``refusing``."""
        flags = self._span_ctx_flags
        span = ReadableSpan(
            name=name,
            context=SpanContext(trace_id, span_id, False, flags),
            parent=(
                SpanContext(trace_id, parent_span_id, False, flags)
                if parent_span_id
                else None
            ),
            resource=self.resource,
            attributes=attributes,
            events=events,
            links=links,
            kind=SpanKind.INTERNAL,
            status=status,
            start_time=start,
            end_time=end,
            instrumentation_scope=self._scope_info,
        )
        for proc in self.processors:
            if refusing is not None and proc in refusing:
                continue  # counted by _refuse()
            try:
                proc.on_end(span)
            except Exception as exc:  # noqa: BLE001 - one processor must not stop the others
                _log.warning("otelflow span processor %r failed: %s", proc, exc)

    def scope_span(
        self,
        rec: ScopeRec,
        name: str,
        status: str,
        attrs: dict[str, Any],
        links: list[tuple[int, int]] | None = None,
    ) -> None:
        """Write and export the span of a workflow, block or the session.

        Its status is ERROR when its body raised (described by the exception type) or when
        any of its tasks failed (``2 of 54 tasks failed``), so a trace list shows which runs
        had failures. A workflow with a trace of its own is that trace's root, linked to
        the session span; ``links`` are (trace id, span id) pairs (the session's links to
        the workflow traces).
        """
        parent = rec.parent
        parent_id = parent.span_id if parent is not None else None
        pairs = list(links or ())
        if parent is not None and parent.trace_id != rec.trace_id:
            pairs.append((parent.trace_id, parent_id))  # type: ignore[arg-type]
            parent_id = None
        failed_msg = tasks_failed_message(rec.counts)
        if self.jsonl is not None:
            self.jsonl.write_struct(
                SpanLine(
                    trace_id=rec.trace_hex,
                    span_id=rec.span_hex,
                    parent_span_id=f"{parent_id:016x}" if parent_id else None,
                    name=name,
                    kind=rec.kind,
                    start_time=rec.start,
                    end_time=rec.end,
                    status=status,
                    attributes=attrs,
                    links=[f"{t:032x}:{sid:016x}" if t != rec.trace_id else f"{sid:016x}" for t, sid in pairs],
                    error_message=failed_msg,
                )
            )
        if self.processors:
            refusing = self._refuse() if self._refusable else None
            if refusing is not None and len(refusing) == len(self.processors):
                return  # every processor refused (and counted) it
            if status == "failed":
                error = rec.error_type or "failed"
                span_status = Status(StatusCode.ERROR, f"{error}: {failed_msg}" if failed_msg else error)
            elif failed_msg:
                span_status = Status(StatusCode.ERROR, failed_msg)
            else:
                span_status = Status(StatusCode.UNSET)
            flags = self._span_ctx_flags
            span_links = [Link(SpanContext(t, sid, False, flags)) for t, sid in pairs]
            self._export(
                name,
                rec.span_id,
                parent_id,
                rec.start,
                rec.end,
                attrs,
                [],
                span_links,
                span_status,
                refusing,
                trace_id=rec.trace_id,
            )


def task_span_start(rec: TaskRec, end: int) -> int:
    """A task span's start: its TaskStarted, or its end if it never started."""
    started = rec.started
    return min(started, end) if started else end


def _add_waits(attrs: dict[str, Any], rec: TaskRec, end: int) -> None:
    """The lifecycle times (ns) and waits (s) of ``rec`` as span attributes (see otelflow.events.waits)."""
    created = rec.created
    attrs["otelflow.task.created_time"] = created
    resolved, submitted, queued, started = rec.resolved, rec.submitted, rec.queued, rec.started
    if resolved:
        attrs["otelflow.task.resolved_time"] = resolved
        attrs["otelflow.task.dependency_wait_s"] = max(0, resolved - created) / 1e9
    if submitted:
        attrs["otelflow.task.submitted_time"] = submitted
    if queued:
        attrs["otelflow.task.queued_time"] = queued
    if started:
        ready = resolved or submitted or created
        hand = dispatched_at(ready, submitted, queued, started)
        attrs["otelflow.task.dispatch_wait_s"] = (hand - ready) / 1e9
        attrs["otelflow.task.queue_wait_s"] = max(0, started - hand) / 1e9


def tasks_failed_message(counts: list[int]) -> str | None:
    """``"2 of 54 tasks failed"`` for a scope's (completed, failed, canceled) counts, or None."""
    failed = counts[1]
    if not failed:
        return None
    total = counts[0] + failed + counts[2]
    return f"{failed} of {total} task{'s' if total != 1 else ''} failed"
