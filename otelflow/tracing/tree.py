"""Events → the four-level trace tree: session → workflow → block (nested) → task.

Runs on the dispatcher thread only. It keeps one record per task and per scope *in
flight* (memory is bounded by what is running, not by what ran), and when a task reaches
a terminal state it:

* hands the finished span to :class:`~otelflow.tracing.spans.SpanEmitter` (the JSONL
  span line, and an OTel span for export processors only if one of them takes it),
* updates the running metric aggregates,
* and ends the enclosing scopes whose own exit has already happened.

Span times are the events' ``event_time``, never the time the dispatcher got to them.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

from otelflow.events.model import (
    BlockEnded,
    BlockStarted,
    Event,
    LogRecord,
    SessionEnded,
    SessionStarted,
    TaskCanceled,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskQueued,
    TaskResolved,
    TaskStarted,
    TaskSubmitted,
    WorkflowEnded,
    WorkflowStarted,
    new_event_id,
    now_ns,
)
from otelflow.tracing.ids import workflow_trace_id
from otelflow.tracing.records import CREATED, QUEUED, RESOLVED, STARTED, SUBMITTED, ScopeRec, TaskRec
from otelflow.tracing.spans import SpanEmitter

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor

    from otelflow.metrics.recorder import MetricRecorder
    from otelflow.sinks.jsonl import JsonlWriter

_log = logging.getLogger("otelflow")

#: Most workflow traces the session span links to (with a trace per workflow).
MAX_WORKFLOW_LINKS = 1000

class TraceTree:
    """Builds the trace tree and metric aggregates from events (dispatcher thread)."""

    def __init__(
        self,
        *,
        trace_id: int,
        session_span_id: int,
        session_id: str,
        resource: Resource,
        recorder: MetricRecorder,
        jsonl: JsonlWriter | None,
        processors: Sequence[SpanProcessor],
        scope_spans: dict[str, tuple[int, int]],
        sample_ratio: float = 1.0,
        version: str = "",
        wait_spans: bool = False,
        session_name: str = "session",
        run_id: str | None = None,
        trace_per_workflow: bool = False,
    ) -> None:
        self.trace_per_workflow = trace_per_workflow
        # With a trace per workflow: (trace id, span id) of each workflow span, for the
        # session span's links (bounded; the rest are counted).
        self.workflow_links: list[tuple[int, int]] = []
        self.workflow_links_omitted = 0
        self._done_trace: dict[str, int] = {}  # recently finished task -> its trace (per workflow)
        self.session_name = session_name
        self.run_id = run_id
        self.trace_id = trace_id
        self.trace_hex = f"{trace_id:032x}"
        self.session_id = session_id
        self.resource = resource
        self.recorder = recorder
        self.scope_spans = scope_spans
        self._task_key = blake2b(digest_size=8, key=trace_id.to_bytes(16, "big"))
        self.spans = SpanEmitter(
            trace_id=trace_id,
            resource=resource,
            jsonl=jsonl,
            processors=processors,
            task_span_id=self.task_span_id,
            sample_ratio=sample_ratio,
            version=version,
            wait_spans=wait_spans,
        )
        self.tasks: dict[str, TaskRec] = {}
        self.scopes: dict[str, ScopeRec] = {}
        self.session = ScopeRec("session", session_id, "session", session_span_id, None, now_ns())
        self.session.trace_id = trace_id
        self.session.trace_hex = self.trace_hex
        self.session.task_header = _prefix(self.trace_hex).encode()
        # TaskResolved events the tree derived (its state already applied), each with its
        # JSONL line header: the dispatcher writes and fans them out after the event that
        # caused them.
        self.derived: list[tuple[TaskResolved, bytes]] = []
        # Recently finished task ids, so late events for them are recognised (bounded).
        # Their final status, so a task created after its upstream failed is never resolved.
        self._recent_done: OrderedDict[str, str] = OrderedDict()
        self.late_events = 0
        self.duplicate_tasks = 0
        self._header_prefix = f'{{"section":"event","trace_id":"{self.trace_hex}","span_id":"'
        self._session_header = (self._header_prefix + self.session.span_hex + '"').encode()
        #: Event type -> the handler that applies it and returns its JSONL line header. The
        #: dispatcher looks an event up here itself (one call less per event); any other
        #: event goes through :meth:`handle`.
        self.routes: dict[type, Callable[[Any], bytes]] = {
            TaskCreated: self._created,
            TaskResolved: self._resolved,
            TaskSubmitted: self._submitted,
            TaskQueued: self._queued,
            TaskStarted: self._started,
            TaskCompleted: self._terminal,
            TaskFailed: self._terminal,
            TaskCanceled: self._terminal,
            WorkflowStarted: self._scope_started,
            BlockStarted: self._scope_started,
            WorkflowEnded: self._scope_ended,
            BlockEnded: self._scope_ended,
            SessionStarted: self._session_started,
            SessionEnded: self._session_header_for,
            LogRecord: self._log_header,
        }

    # -- entry point ----------------------------------------------------------------------

    def handle(self, ev: Event) -> bytes:
        """Apply ``ev``; return the JSONL line header (section, trace and span ids)."""
        route = self.routes.get(type(ev))
        if route is None:
            return self._other(ev)
        return route(ev)

    def task_span_id(self, task_id: str) -> int:
        h = self._task_key.copy()
        h.update(task_id.encode())
        return int.from_bytes(h.digest(), "big") or 1

    # -- tasks -------------------------------------------------------------------------------

    def _new_task(self, ev: Event, backend: str | None, attributes: Any) -> TaskRec:
        rec = TaskRec()
        tid = ev.task_id or ""
        rec.id = tid
        rec.name = ev.task_name or "task"
        rec.span_id = sid = self.task_span_id(tid)
        scope = self.scopes.get(ev.block_id or ev.workflow_id or "")
        if scope is None and ev.workflow_id:
            scope = self.scopes.get(ev.workflow_id)
        if scope is None:
            scope = self.session
        scope.open += 1
        rec.scope = scope
        rec.parent_id = scope.span_id
        rec.parent_hex = scope.span_hex
        rec.trace_id = scope.trace_id
        header = scope.task_header
        rec.remote_ids = None
        if scope is self.session and (ev.workflow_id or ev.block_id):
            # Scope ids from another process (a task inside a pool task): kept for attributes.
            rec.remote_ids = (ev.workflow_id, ev.block_id)
            if self.trace_per_workflow and ev.workflow_id:
                # A task of a workflow entered in another process: its workflow's trace.
                rec.trace_id = workflow_trace_id(self.trace_id, ev.workflow_id)
                header = _prefix(f"{rec.trace_id:032x}").encode()
        rec.dep_traces = None
        rec.workflow = wf = scope.workflow
        rec.backend = backend
        rec.attributes = attributes
        rec.created = ev.event_time
        rec.resolved = rec.submitted = rec.queued = rec.started = 0
        rec.state = CREATED
        rec.deps = ()
        rec.dependents = None
        rec.pending = 0
        rec.ready = 0  # the latest end of the upstream tasks that completed so far
        rec.worker = None
        rec.counts = self.recorder.task_counts(rec.name, wf.name if wf is not None else None, backend)
        rec.header = header + f'{sid:016x}"'.encode()
        self.tasks[tid] = rec
        return rec

    def _lookup(self, ev: Event) -> TaskRec | None:
        rec = self.tasks.get(ev.task_id)  # type: ignore[arg-type]
        if rec is None:
            if ev.task_id in self._recent_done:
                self.late_events += 1
                return None
            # A lifecycle event with no TaskCreated before it: track it from here.
            rec = self._new_task(ev, None, None)
            rec.counts[0] += 1
        return rec

    def _created(self, ev: TaskCreated) -> bytes:
        tid = ev.task_id
        if tid in self.tasks:
            self.duplicate_tasks += 1
            if self.duplicate_tasks == 1:
                _log.warning(
                    "otelflow saw task id %r created twice while it was still running; task "
                    "ids must be unique within a session (the second is ignored).",
                    tid,
                )
            return self.tasks[tid].header
        rec = self._new_task(ev, ev.backend, ev.attributes)
        rec.counts[0] += 1
        if ev.parent_span_id:
            try:
                rec.parent_id = int(ev.parent_span_id, 16) or rec.parent_id
                rec.parent_hex = f"{rec.parent_id:016x}"
            except ValueError:
                pass
        deps = ev.depends_on
        if deps:
            rec.deps = deps
            pending = 0
            tasks = self.tasks
            for dep in deps:
                up = tasks.get(dep)
                if up is not None:
                    if up.dependents is None:
                        up.dependents = [rec]
                    else:
                        up.dependents.append(rec)
                    pending += 1
                elif self._recent_done.get(dep, "completed") != "completed":
                    pending = -1  # an upstream already failed or was canceled: never resolved
                    break
            rec.pending = pending
            if self.trace_per_workflow:
                # Links to upstream tasks in another workflow's trace need that trace id.
                own = rec.trace_id
                done = self._done_trace
                traces = tuple(t.trace_id if (t := tasks.get(d)) is not None else done.get(d, own) for d in deps)
                if any(t != own for t in traces):
                    rec.dep_traces = traces
        if rec.pending == 0:
            self._derive_resolved(rec, ev.event_time)
        return rec.header

    def _derive_resolved(self, rec: TaskRec, when: int) -> None:
        """Resolve ``rec`` at ``when`` (as a TaskResolved event would) and queue that event."""
        wf = rec.workflow
        scope = rec.scope
        rec.resolved = when
        rec.pending = 0
        if rec.state < RESOLVED:  # noqa: PLR1730 - a comparison is cheaper than max() per task
            rec.state = RESOLVED
        rec.counts[1] += 1
        self.derived.append(
            (
                TaskResolved(
                    event_id=new_event_id(),
                    event_time=when,
                    emit_time=now_ns(),
                    session_id=self.session_id,
                    workflow_id=wf.id if wf is not None else None,
                    block_id=scope.id if scope.kind == "block" else None,
                    task_id=rec.id,
                    task_name=rec.name,
                ),
                rec.header,
            )
        )

    def _resolved(self, ev: TaskResolved) -> bytes:
        rec = self._lookup(ev)
        if rec is None:
            return self._session_header
        if not rec.resolved:
            rec.resolved = ev.event_time
            rec.pending = 0
            rec.state = max(rec.state, RESOLVED)
            rec.counts[1] += 1
        return rec.header

    def _submitted(self, ev: TaskSubmitted) -> bytes:
        rec = self._lookup(ev)
        if rec is None:
            return self._session_header
        if not rec.submitted:
            rec.submitted = ev.event_time
            rec.counts[2] += 1
            rec.state = max(rec.state, SUBMITTED)
        return rec.header

    def _queued(self, ev: TaskQueued) -> bytes:
        rec = self._lookup(ev)
        if rec is None:
            return self._session_header
        if rec.state < QUEUED:
            rec.queued = ev.event_time
            rec.state = QUEUED
            counts = rec.counts
            counts[3] += 1
            counts[9] += 1
        return rec.header

    def _started(self, ev: TaskStarted) -> bytes:
        rec = self._lookup(ev)
        if rec is None:
            return self._session_header
        if rec.state < STARTED:
            counts = rec.counts
            if rec.state == QUEUED:
                counts[9] -= 1
            rec.state = STARTED
            rec.started = ev.event_time
            rec.worker = ev.worker
            counts[4] += 1
            counts[8] += 1
        return rec.header

    def _terminal(self, ev: TaskCompleted | TaskFailed | TaskCanceled) -> bytes:
        rec = self._lookup(ev)
        if rec is None:
            return self._session_header
        cls = type(ev)
        status = "completed" if cls is TaskCompleted else "failed" if cls is TaskFailed else "canceled"
        self._finish_task(rec, ev.event_time, status, ev)
        return rec.header

    def _finish_task(self, rec: TaskRec, end: int, status: str, ev: Any) -> None:
        counts = rec.counts
        state = rec.state
        if state == STARTED:
            counts[8] -= 1
        elif state == QUEUED:
            counts[9] -= 1
        if status == "completed":
            counts[5] += 1
        elif status == "failed":
            counts[6] += 1
        elif status == "canceled":
            counts[7] += 1
        tid = rec.id
        del self.tasks[tid]
        done = self._recent_done
        done[tid] = status
        if self.trace_per_workflow:
            self._done_trace[tid] = rec.trace_id
        if len(done) > 16384:
            old, _ = done.popitem(last=False)  # O(1); a plain dict used as a FIFO degrades to O(n)
            self._done_trace.pop(old, None)
        self.recorder.task_finished(rec, end, status, ev)
        self.spans.task_span(rec, end, status, ev)
        # Downstream tasks waiting on this one. Only a completed upstream counts towards
        # resolving them: after a failed or canceled one a task is never Resolved (the
        # engine ends it failed or canceled; pending -1 marks it so for good).
        dependents = rec.dependents
        if dependents:
            ok = status == "completed"
            for down in dependents:
                if down.pending > 0:
                    if not ok:
                        down.pending = -1
                        continue
                    down.pending -= 1
                    # Upstreams measured in different workers can be recorded out of end
                    # order: Resolved is the latest end, not the end recorded last.
                    down.ready = max(down.ready, end)
                    if down.pending == 0 and not down.resolved and down.id in self.tasks:
                        self._derive_resolved(down, down.ready)
        # The enclosing scope may be waiting for this task before it ends.
        scope = rec.scope
        idx = 0 if status == "completed" else 1 if status == "failed" else 2 if status == "canceled" else -1
        if idx >= 0:
            s: ScopeRec | None = scope
            while s is not None:
                s.counts[idx] += 1
                s = s.parent
        scope.open -= 1
        scope.end = max(scope.end, end)
        if scope.exited and scope.open <= 0:
            self._close_scope(scope)

    # -- scopes ------------------------------------------------------------------------------

    def _session_started(self, ev: SessionStarted) -> bytes:
        self.session.start = ev.event_time
        self.session.end = ev.event_time
        return self._session_header

    def _session_header_for(self, ev: Event) -> bytes:
        return self._session_header

    def _scope_started(self, ev: WorkflowStarted | BlockStarted) -> bytes:
        if isinstance(ev, WorkflowStarted):
            kind, sid, name = "workflow", ev.workflow_id or "", ev.workflow_name
            parent_id = None
        else:
            kind, sid, name = "block", ev.block_id or "", ev.block_name
            parent_id = ev.parent_block_id or ev.workflow_id
        span_id, parent_span = self.scope_spans.pop(sid, (0, 0))
        parent = self.scopes.get(parent_id) if parent_id else None
        if parent is None and parent_span:
            parent = next((s for s in self.scopes.values() if s.span_id == parent_span), None)
        if parent is None:
            parent = self.session
        if not span_id:
            span_id = self.task_span_id(sid)
        rec = ScopeRec(kind, sid, name, span_id, parent, ev.event_time)
        if kind == "workflow" and self.trace_per_workflow:
            rec.trace_id = workflow_trace_id(self.trace_id, sid)
            rec.trace_hex = f"{rec.trace_id:032x}"
            if len(self.workflow_links) < MAX_WORKFLOW_LINKS:
                self.workflow_links.append((rec.trace_id, span_id))
            else:
                self.workflow_links_omitted += 1
        if kind == "workflow":
            rec.workflow_name = name
            rec.workflow = rec
            self.recorder.workflow_started(rec)
        else:
            rec.workflow = parent.workflow
        rec.task_header = _prefix(rec.trace_hex).encode()
        parent.open += 1
        self.scopes[sid] = rec
        return rec.task_header + (rec.span_hex + '"').encode()

    def _scope_ended(self, ev: WorkflowEnded | BlockEnded) -> bytes:
        sid = ev.block_id if type(ev) is BlockEnded else ev.workflow_id
        rec = self.scopes.get(sid or "")
        if rec is None:
            self.late_events += 1
            return self._session_header
        rec.exited = True
        rec.status = ev.status
        rec.error_type = ev.error_type
        rec.end = max(rec.end, ev.event_time)
        header = (_prefix(rec.trace_hex) + rec.span_hex + '"').encode()
        if rec.open <= 0:
            self._close_scope(rec)
        return header

    def _close_scope(self, rec: ScopeRec, incomplete: bool = False) -> None:
        self.scopes.pop(rec.id, None)
        status = "incomplete" if incomplete else rec.status
        if rec.kind == "workflow":
            self.recorder.workflow_finished(rec, status)
        attrs: dict[str, Any] = {f"otelflow.{rec.kind}.id": rec.id, f"otelflow.{rec.kind}.name": rec.name}
        if rec.kind == "block":
            wf = rec.parent
            while wf is not None and wf.kind == "block":
                wf = wf.parent
            if wf is not None and wf.kind == "workflow":
                attrs["otelflow.workflow.id"] = wf.id
                attrs["otelflow.workflow.name"] = wf.name
        attrs["otelflow.tasks.completed"] = rec.counts[0]
        attrs["otelflow.tasks.failed"] = rec.counts[1]
        attrs["otelflow.tasks.canceled"] = rec.counts[2]
        if rec.error_type:
            attrs["error.type"] = rec.error_type
        self.spans.scope_span(rec, f"{rec.kind} {rec.name}", status, attrs)
        parent = rec.parent
        if parent is not None:
            parent.open -= 1
            parent.end = max(parent.end, rec.end)
            if parent.exited and parent.open <= 0 and parent.kind != "session":
                self._close_scope(parent)

    def _log_header(self, ev: LogRecord) -> bytes:
        # The record carries its own trace_id/span_id fields (the bridge always sets them).
        if ev.trace_id and ev.span_id:
            return b'{"section":"log"'
        return f'{{"section":"log","trace_id":"{self.trace_hex}","span_id":"{self.session.span_hex}"'.encode()

    def _other(self, ev: Event) -> bytes:
        if ev.task_id:
            rec = self.tasks.get(ev.task_id)
            if rec is not None:
                return rec.header
        scope = self.scopes.get(ev.block_id or ev.workflow_id or "")
        if scope is not None:
            return (_prefix(scope.trace_hex) + scope.span_hex + '"').encode()
        return self._session_header

    # -- stop --------------------------------------------------------------------------------

    def close_all(self, end: int, attributes: dict[str, Any] | None = None, session_span: bool = True) -> int:
        """Close every open task (marked incomplete), scope and (unless told not to) the session span.

        Returns the number of tasks that were still open.
        """
        open_tasks = list(self.tasks.values())
        for rec in open_tasks:
            self._finish_task(rec, max(end, rec.created), "incomplete", None)
        # Close innermost scopes first so parents see their children end.
        for scope in sorted(self.scopes.values(), key=_depth, reverse=True):
            if scope.id in self.scopes:
                scope.end = max(scope.end, end) if not scope.exited else scope.end
                self._close_scope(scope, incomplete=not scope.exited)
        if not session_span:
            return len(open_tasks)
        session = self.session
        session.end = max(end, session.end)
        attrs: dict[str, Any] = {"otelflow.session.id": self.session_id}
        if self.run_id:
            attrs["otelflow.run.id"] = self.run_id  # also on the resource, which some backends drop
        attrs.update(attributes or {})
        attrs["otelflow.tasks.completed"] = session.counts[0]
        attrs["otelflow.tasks.failed"] = session.counts[1]
        attrs["otelflow.tasks.canceled"] = session.counts[2]
        if self.workflow_links_omitted:
            attrs["otelflow.workflows.unlinked"] = self.workflow_links_omitted
        self.spans.scope_span(session, self.session_name, "completed", attrs, links=self.workflow_links)
        return len(open_tasks)


def _prefix(trace_hex: str) -> str:
    """Start of a JSONL event line's header in trace ``trace_hex``."""
    return f'{{"section":"event","trace_id":"{trace_hex}","span_id":"'


def _depth(rec: ScopeRec) -> int:
    d = 0
    p = rec.parent
    while p is not None:
        d += 1
        p = p.parent
    return d


__all__ = ["TraceTree"]
