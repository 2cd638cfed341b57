"""Per-task and per-scope tables assembled from a run's events and spans in one pass.

A task's record is filled from its lifecycle events (written by whichever process saw
them) and from its span line (written by the main process when the task ended); whichever
source has a value first wins, earliest time wins for repeated lifecycle events. So a run
whose main process was killed (events, no spans) and a run read from spans only both give
complete tables.

Definitions used throughout ``otelflow.analysis``:

* dependency wait — Created → Resolved (all upstream tasks done);
* dispatch wait — Resolved (Submitted, then Created, when there was no Resolved) → handed
  to the executor (the earlier of Submitted and Queued at or after Resolved): the engine's
  own lag;
* queue wait — handed to the executor → Started: waiting for a free worker;
* execution — Started → Completed | Failed | Canceled.

For every task that ran, the four add up to its lifetime, Created → terminal (the one
definition is :mod:`otelflow.events.waits`). ``scheduling wait`` (Resolved → Started) is kept
for compatibility: dispatch wait + queue wait.
"""

from __future__ import annotations

import gc
import re
from array import array
from dataclasses import dataclass, field
from sys import intern
from typing import TYPE_CHECKING, Any

import msgspec

from otelflow.analysis._lines import EventLine, SpanAttrs, SpanLine
from otelflow.events.waits import dispatched_at

if TYPE_CHECKING:
    from otelflow.analysis.reader import Run

__all__ = ["ResourceStats", "RunData", "ScopeInfo", "TaskInfo", "collect"]

TERMINAL_STATES = ("completed", "failed", "canceled")
"""Terminal task states, as in task span ``status`` and ``otelflow.task.status``."""

#: Lifecycle states in order; a task that never ended is reported in its last state.
STATES = ("created", "resolved", "submitted", "queued", "running", *TERMINAL_STATES, "incomplete")

PHASE_PREFIX = "otelflow.phase."
"""Task span attributes ``otelflow.phase.<name>_s``: seconds an engine measured for one phase."""

_TERMINAL_EVENTS = {"TaskCompleted": "completed", "TaskFailed": "failed", "TaskCanceled": "canceled"}
_SLOT_INDEX = {"TaskCreated": 0, "TaskResolved": 1, "TaskSubmitted": 2, "TaskQueued": 3, "TaskStarted": 4}
_NS = 1e9
#: Event types (suffixes, so ``dask.WorkerAdded`` counts) that mark a worker joining and
#: leaving; with them, a worker's uptime is from its first join to its last leave.
_WORKER_EVENTS = ("WorkerAdded", "WorkerRemoved")


_NONE = -(2**63)  # "not recorded" in the packed numeric fields of a TaskInfo
_HEX16 = re.compile(r"[0-9a-f]{16}").fullmatch
_PACKED = 9  # created resolved submitted queued started ended span_id pid peak_rss
_BLANK = array("q", [_NONE] * _PACKED)
_CHUNK_ROWS = 4096
_CHUNK_BLANK = _BLANK * _CHUNK_ROWS
_OFFSETS = tuple(range(0, _CHUNK_ROWS * _PACKED, _PACKED))  # shared int objects, not one per task


class _Columns:
    """Packed numeric fields of many TaskInfo records: rows in shared arrays of 4096."""

    __slots__ = ("_chunk", "_next")

    def __init__(self) -> None:
        self._chunk = array("q", _CHUNK_BLANK)
        self._next = 0

    def row(self) -> tuple[array[int], int]:
        if self._next == _CHUNK_ROWS:
            self._chunk = array("q", _CHUNK_BLANK)
            self._next = 0
        off = _OFFSETS[self._next]
        self._next += 1
        return self._chunk, off


def _packed_int(i: int) -> property:
    def get(self: TaskInfo) -> int | None:
        v: int = self._n[self._o + i]
        return None if v == _NONE else v

    def set_(self: TaskInfo, v: int | None) -> None:
        if v is None or not (_NONE < v < 2**63):
            v = _NONE  # an out-of-range time is as good as none
        self._n[self._o + i] = int(v)

    return property(get, set_)


class TaskInfo:
    """Everything the run recorded about one task. Times are ns since the epoch or None.

    A run can hold millions of tasks, so a record is compact: the times, pid, peak RSS
    and (hex) span id live packed in one ``array("q")`` behind properties, and the rarely
    set fields in a dict made only when one is set. Read and assign them as plain
    attributes.
    """

    if not TYPE_CHECKING:  # the packed fields are properties, which type checkers see as attributes
        __slots__ = (
            "_n",
            "_o",
            "_x",
            "backend",
            "block_id",
            "block_name",
            "cpu_time_s",
            "depends_on",
            "name",
            "status",
            "task_id",
            "worker",
            "workflow_id",
            "workflow_name",
        )

    #: The record's fields, in :meth:`to_dict` order.
    FIELDS = (
        "attributes",
        "backend",
        "block_id",
        "block_name",
        "cancel_reason",
        "cpu_time_s",
        "created",
        "depends_on",
        "ended",
        "error_message",
        "error_type",
        "links",
        "name",
        "peak_rss_bytes",
        "pid",
        "queued",
        "resolved",
        "span_id",
        "started",
        "status",
        "submitted",
        "task_id",
        "worker",
        "workflow_id",
        "workflow_name",
    )

    if TYPE_CHECKING:  # what the properties below read and take, for type checkers
        created: int | None
        resolved: int | None
        submitted: int | None
        queued: int | None
        started: int | None
        ended: int | None
        pid: int | None
        peak_rss_bytes: int | None
        links: tuple[str, ...]
        error_type: str | None
        error_message: str | None
        cancel_reason: str | None
        attributes: dict[str, Any] | None
    else:
        created = _packed_int(0)
        resolved = _packed_int(1)
        submitted = _packed_int(2)
        queued = _packed_int(3)
        started = _packed_int(4)
        ended = _packed_int(5)
        pid = _packed_int(7)
        peak_rss_bytes = _packed_int(8)

    def __init__(self, task_id: str, _columns: _Columns | None = None) -> None:
        self.task_id = task_id
        if _columns is None:
            self._n, self._o = array("q", _BLANK), 0
        else:
            self._n, self._o = _columns.row()
        self._x: dict[str, Any] | None = None
        self.cpu_time_s: float | None = None
        self.name: str | None = None
        self.workflow_id: str | None = None
        self.workflow_name: str | None = None
        self.block_id: str | None = None
        self.block_name: str | None = None
        self.backend: str | None = None
        self.worker: str | None = None
        self.depends_on: tuple[str, ...] = ()
        #: Terminal state, ``"incomplete"`` (open when the session stopped), or None.
        self.status: str | None = None

    # -- packed and rare fields ---------------------------------------------------------------

    @property
    def span_id(self) -> str | None:
        """The task span's id (16 hex), if its span line was read."""
        v = self._n[self._o + 6]
        if v != _NONE:
            return f"{v & 0xFFFFFFFFFFFFFFFF:016x}"
        return self._x.get("span_id") if self._x else None

    @span_id.setter
    def span_id(self, v: str | None) -> None:
        if v is not None and _HEX16(v) is not None:  # 16 lower-case hex digits: packed
            n = int(v, 16)
            n = n - 2**64 if n >= 2**63 else n
            if n != _NONE:
                self._n[self._o + 6] = n
                if self._x:
                    self._x.pop("span_id", None)
                return
        self._n[self._o + 6] = _NONE
        self._set_x("span_id", v)

    def _set_x(self, key: str, v: Any) -> None:
        if v is None:
            if self._x:
                self._x.pop(key, None)
            return
        if self._x is None:
            self._x = {}
        self._x[key] = v

    def _get_x(self, key: str, default: Any = None) -> Any:
        return self._x.get(key, default) if self._x else default

    if not TYPE_CHECKING:
        links = property(
            lambda self: self._get_x("links", ()),
            lambda self, v: self._set_x("links", tuple(v) if v else None),
            doc="Upstream span ids from the task span's links (used when depends_on is unknown).",
        )
        error_type = property(lambda self: self._get_x("error_type"), lambda self, v: self._set_x("error_type", v))
        error_message = property(
            lambda self: self._get_x("error_message"), lambda self, v: self._set_x("error_message", v)
        )
        cancel_reason = property(
            lambda self: self._get_x("cancel_reason"), lambda self, v: self._set_x("cancel_reason", v)
        )
        attributes = property(
            lambda self: self._get_x("attributes"),
            lambda self, v: self._set_x("attributes", v),
            doc="The task's own attributes from TaskCreated, if any.",
        )

    def __repr__(self) -> str:
        return f"TaskInfo({self.task_id!r}, name={self.name!r}, state={self.state!r})"

    @property
    def state(self) -> str:
        """The final state, or the last lifecycle state reached if the task never ended."""
        if self.status:
            return self.status
        if self.started is not None:
            return "running"
        if self.queued is not None:
            return "queued"
        if self.submitted is not None:
            return "submitted"
        if self.resolved is not None:
            return "resolved"
        return "created"

    @property
    def ready(self) -> int | None:
        """When the task was ready to run: Resolved, else Submitted, else Created."""
        if self.resolved is not None:
            return self.resolved
        return self.submitted if self.submitted is not None else self.created

    @property
    def dependency_wait_s(self) -> float | None:
        """Created → Resolved in seconds, or None if either is unknown."""
        if self.created is None or self.resolved is None:
            return None
        return max(0, self.resolved - self.created) / _NS

    @property
    def scheduling_wait_s(self) -> float | None:
        """Ready (see :attr:`ready`) → Started in seconds, or None if it never started."""
        ready = self.ready
        if ready is None or self.started is None:
            return None
        return max(0, self.started - ready) / _NS

    @property
    def dispatched(self) -> int | None:
        """When the task was handed to the executor (see :mod:`otelflow.events.waits`), or None."""
        ready = self.ready
        if ready is None:
            return None
        return dispatched_at(ready, self.submitted, self.queued, self.started)

    @property
    def dispatch_wait_s(self) -> float | None:
        """Ready → handed to the executor in seconds, or None if it never started."""
        ready = self.ready
        if ready is None or self.started is None:
            return None
        return (dispatched_at(ready, self.submitted, self.queued, self.started) - ready) / _NS

    @property
    def queue_wait_s(self) -> float | None:
        """Handed to the executor → Started in seconds, or None if it never started."""
        ready = self.ready
        if ready is None or self.started is None:
            return None
        return max(0, self.started - dispatched_at(ready, self.submitted, self.queued, self.started)) / _NS

    @property
    def execution_s(self) -> float | None:
        """Started → terminal in seconds, or None if it did not both start and end."""
        if self.started is None or self.ended is None:
            return None
        return max(0, self.ended - self.started) / _NS

    @property
    def lifetime_s(self) -> float | None:
        """Created → terminal in seconds, or None."""
        if self.created is None or self.ended is None:
            return None
        return max(0, self.ended - self.created) / _NS

    def timings(self) -> tuple[float | None, float | None, float | None, float | None, float | None]:
        """``(execution_s, dependency_wait_s, dispatch_wait_s, queue_wait_s, scheduling_wait_s)``
        at once (cheaper than the properties when reading millions of tasks); the waits are
        split as in :mod:`otelflow.events.waits`."""
        o = self._o
        created, resolved, submitted, queued, started, ended = self._n[o : o + 6]
        n = _NONE
        execution = max(0, ended - started) / _NS if n not in (started, ended) else None
        dependency = max(0, resolved - created) / _NS if n not in (created, resolved) else None
        ready = resolved if resolved != n else submitted if submitted != n else created
        if n in (ready, started):
            return execution, dependency, None, None, None
        hand = dispatched_at(ready, submitted if submitted != n else None, queued if queued != n else None, started)
        scheduling = max(0, started - ready) / _NS
        return execution, dependency, (hand - ready) / _NS, max(0, started - hand) / _NS, scheduling

    def run_span(self) -> tuple[int, int] | None:
        """``(started, ended)`` in ns if the task both started and ended, else None (one read
        of the packed fields instead of two properties)."""
        o = self._o
        started, ended = self._n[o + 4 : o + 6]
        if _NONE in (started, ended):
            return None
        return started, ended

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (times in ns, waits in seconds)."""
        out: dict[str, Any] = {f: getattr(self, f) for f in self.FIELDS}
        out["depends_on"] = list(self.depends_on)
        out["links"] = list(self.links)
        out["state"] = self.state
        out["dependency_wait_s"] = self.dependency_wait_s
        out["dispatch_wait_s"] = self.dispatch_wait_s
        out["queue_wait_s"] = self.queue_wait_s
        out["scheduling_wait_s"] = self.scheduling_wait_s
        out["execution_s"] = self.execution_s
        return out


@dataclass
class ScopeInfo:
    """A workflow or block: from its Started/Ended events and its span line.

    Attributes:
        kind: ``"workflow"`` or ``"block"``.
        id: The workflow or block id.
        name: Its name.
        workflow_id: For a block, its workflow (if any).
        parent_block_id: For a nested block, the enclosing block.
        start: Entered, ns.
        end: Its span's end (which waits for its tasks), else its exit, ns.
        status: ``completed``, ``failed``, ``incomplete``, or None while open.
        error_type: The exception type it exited with, if any.
        span_id: Its span id (16 hex), if its span line was written.
    """

    kind: str
    id: str
    name: str | None = None
    workflow_id: str | None = None
    parent_block_id: str | None = None
    start: int | None = None
    end: int | None = None
    status: str | None = None
    error_type: str | None = None
    span_id: str | None = None

    @property
    def duration_s(self) -> float | None:
        """End − start in seconds, or None."""
        if self.start is None or self.end is None:
            return None
        return max(0, self.end - self.start) / _NS


@dataclass
class ResourceStats:
    """Mean and peak of the resource samples for one (scope, node, device)."""

    samples: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)

    _FIELDS = ("cpu_utilization", "memory_utilization", "gpu_utilization", "memory_used_bytes")

    def add(self, line: EventLine) -> None:
        self.samples += 1
        for f in self._FIELDS:
            v = getattr(line, f)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.sums[f] = self.sums.get(f, 0.0) + v
                self.counts[f] = self.counts.get(f, 0) + 1
                if v > self.peaks.get(f, float("-inf")):
                    self.peaks[f] = v

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"samples": self.samples}
        for f in self._FIELDS:
            if f in self.counts:
                out[f] = {"mean": self.sums[f] / self.counts[f], "max": self.peaks[f]}
        return out


@dataclass
class RunData:
    """The tables of one run (see :func:`collect`)."""

    tasks: dict[str, TaskInfo] = field(default_factory=dict)
    workflows: dict[str, ScopeInfo] = field(default_factory=dict)
    blocks: dict[str, ScopeInfo] = field(default_factory=dict)
    session_start: int | None = None
    session_end: int | None = None
    first_time: int | None = None
    last_time: int | None = None
    event_counts: dict[str, int] = field(default_factory=dict)
    section_counts: dict[str, int] = field(default_factory=dict)
    resources: dict[str, ResourceStats] = field(default_factory=dict)
    #: One example stacktrace per error type, where the run recorded one.
    stacktraces: dict[str, str] = field(default_factory=dict)
    #: ``(event type, worker, time)`` of worker join/leave events (``*WorkerAdded``,
    #: ``*WorkerRemoved``), in file order.
    worker_events: list[tuple[str, str, int | None]] = field(default_factory=list)

    def upstream(self, task: TaskInfo) -> list[TaskInfo]:
        """The known upstream tasks of ``task`` (from ``depends_on`` and span links)."""
        return [self.tasks[d] for d in task.depends_on if d in self.tasks]


def _min(a: int | None, b: Any) -> int | None:
    if not isinstance(b, int):
        return a
    return b if a is None or b < a else a


def _max(a: int | None, b: Any) -> int | None:
    if not isinstance(b, int):
        return a
    return b if a is None or b > a else a


def _istr(v: Any) -> str | None:
    """Intern a repeated string (names, ids of scopes, workers); None for anything else."""
    return intern(v) if isinstance(v, str) else None


class _Collector:
    def __init__(self) -> None:
        self.data = RunData()
        self.columns = _Columns()
        self.first: int | None = None
        self.last: int | None = None

    def task(self, task_id: str) -> TaskInfo:
        rec = self.data.tasks.get(task_id)
        if rec is None:
            rec = self.data.tasks[task_id] = TaskInfo(task_id, self.columns)
        return rec

    def scope(self, kind: str, sid: str) -> ScopeInfo:
        table = self.data.workflows if kind == "workflow" else self.data.blocks
        rec = table.get(sid)
        if rec is None:
            rec = table[sid] = ScopeInfo(kind, sid)
        return rec

    def seen(self, t: int | None) -> None:
        if t is not None:
            if self.first is None or t < self.first:
                self.first = t
            if self.last is None or t > self.last:
                self.last = t

    # -- events -----------------------------------------------------------------------------

    def event(self, ev: EventLine) -> None:
        typ = ev.type if ev.type is not None else "?"
        counts = self.data.event_counts
        counts[typ] = counts.get(typ, 0) + 1
        t = ev.event_time
        if t is not None:
            first, last = self.first, self.last
            if first is None or t < first:
                self.first = t
            if last is None or t > last:
                self.last = t
        slot = _SLOT_INDEX.get(typ)
        terminal = _TERMINAL_EVENTS.get(typ) if slot is None else None
        if slot is not None or terminal is not None:
            tid = ev.task_id
            if tid is None:
                return
            rec = self.data.tasks.get(tid)
            if rec is None:
                rec = self.data.tasks[tid] = TaskInfo(tid, self.columns)
            if rec.name is None and ev.task_name is not None:
                rec.name = intern(ev.task_name)
            if rec.workflow_id is None and ev.workflow_id is not None:
                rec.workflow_id = intern(ev.workflow_id)
            if rec.block_id is None and ev.block_id is not None:
                rec.block_id = intern(ev.block_id)
            if slot is not None:
                if t is not None and _NONE < t < 2**63:
                    # Straight into the packed columns: this runs once per lifecycle event.
                    n, i = rec._n, rec._o + slot
                    cur = n[i]
                    if cur == _NONE or t < cur:
                        n[i] = t
                if typ == "TaskCreated":
                    if ev.depends_on and not rec.depends_on:
                        rec.depends_on = tuple(ev.depends_on)
                    if rec.backend is None:
                        rec.backend = _istr(ev.backend)
                    if ev.attributes is not None and rec.attributes is None:
                        attrs = _decode_attrs(ev.attributes)
                        if attrs:
                            rec.attributes = attrs
                elif typ == "TaskStarted":
                    if rec.worker is None and ev.worker is not None:
                        rec.worker = intern(ev.worker)
                    if ev.pid is not None and rec.pid is None:
                        rec.pid = ev.pid
            else:
                if (
                    rec.status is None
                    or rec.status == "incomplete"
                    or (t is not None and rec.ended is not None and t < rec.ended)
                ):
                    rec.status = terminal
                    rec.ended = t if t is not None else rec.ended
                    if terminal == "failed":
                        rec.error_type = ev.error_type or "Exception"
                        rec.error_message = ev.error_message or rec.error_message
                        if ev.stacktrace:
                            self.data.stacktraces.setdefault(rec.error_type, ev.stacktrace)
                    elif terminal == "canceled":
                        rec.cancel_reason = ev.reason
                elif terminal == "canceled" and rec.status == "canceled" and rec.cancel_reason is None:
                    rec.cancel_reason = ev.reason  # the span line came first: it has no reason
                if ev.cpu_time_s is not None:
                    rec.cpu_time_s = ev.cpu_time_s
                if ev.peak_rss_bytes is not None:
                    rec.peak_rss_bytes = ev.peak_rss_bytes
            return
        if typ in ("WorkflowStarted", "WorkflowEnded"):
            wid = ev.workflow_id
            if wid is None:
                return
            rec_s = self.scope("workflow", wid)
            if typ == "WorkflowStarted":
                rec_s.start = _min(rec_s.start, t)
                rec_s.name = rec_s.name or ev.workflow_name
            else:
                self._scope_ended(rec_s, ev, t)
        elif typ in ("BlockStarted", "BlockEnded"):
            bid = ev.block_id
            if bid is None:
                return
            rec_s = self.scope("block", bid)
            rec_s.workflow_id = rec_s.workflow_id or ev.workflow_id
            if typ == "BlockStarted":
                rec_s.start = _min(rec_s.start, t)
                rec_s.name = rec_s.name or ev.block_name
                rec_s.parent_block_id = rec_s.parent_block_id or ev.parent_block_id
            else:
                self._scope_ended(rec_s, ev, t)
        elif typ == "SessionStarted":
            self.data.session_start = _min(self.data.session_start, t)
        elif typ == "SessionEnded":
            self.data.session_end = _max(self.data.session_end, t)
        elif typ == "ResourceUpdate":
            key = f"{ev.scope or 'node'}:{ev.node or ''}"
            if ev.device is not None:
                key += f":{ev.device}"
            stats = self.data.resources.get(key)
            if stats is None:
                stats = self.data.resources[key] = ResourceStats()
            stats.add(ev)
        elif typ.endswith(_WORKER_EVENTS) and ev.worker is not None:
            self.data.worker_events.append((typ, ev.worker, t))

    @staticmethod
    def _scope_ended(rec: ScopeInfo, ev: EventLine, t: int | None) -> None:
        rec.end = _max(rec.end, t)
        if rec.status is None:
            rec.status = ev.status or "completed"
        rec.error_type = rec.error_type or ev.error_type

    # -- spans ------------------------------------------------------------------------------

    def span(self, sp: SpanLine) -> None:
        kind = sp.kind
        start, end = sp.start_time, sp.end_time
        self.seen(start)
        self.seen(end)
        attrs = sp.attributes
        if kind == "task":
            self._task_span(sp, attrs, start, end)
        elif kind == "workflow" or kind == "block":  # noqa: PLR1714 - kind is str | None
            sid = attrs.workflow_id if kind == "workflow" else attrs.block_id
            if sid is None:
                return
            rec = self.scope(kind, sid)
            rec.name = rec.name or (attrs.workflow_name if kind == "workflow" else attrs.block_name)
            rec.start = _min(rec.start, start)
            rec.end = _max(rec.end, end)
            rec.span_id = rec.span_id or sp.span_id
            status = sp.status
            if status and (rec.status is None or status == "incomplete"):
                rec.status = status
            if kind == "block":
                rec.workflow_id = rec.workflow_id or attrs.workflow_id
            rec.error_type = rec.error_type or attrs.error_type
        elif kind == "session":
            self.data.session_start = _min(self.data.session_start, start)
            self.data.session_end = _max(self.data.session_end, end)

    def _task_span(self, sp: SpanLine, attrs: SpanAttrs, start: int | None, end: int | None) -> None:
        span_id = sp.span_id
        tid = attrs.task_id
        if tid is None:
            if span_id is None:
                return
            tid = span_id
        rec = self.data.tasks.get(tid)
        if rec is None:
            rec = self.data.tasks[tid] = TaskInfo(tid, self.columns)
        if span_id is not None:
            rec.span_id = span_id
        n, o = rec._n, rec._o
        phases = attrs.phases()
        if phases:  # engine-measured phases of the task (see build_report's "phases")
            rec.attributes = {**(rec.attributes or {}), **phases}
        if rec.status in TERMINAL_STATES and n[o] != _NONE and n[o + 4] != _NONE and not sp.links:
            # Its events already gave the whole lifecycle (the usual case: the span line
            # comes last): take only what events do not carry.
            if rec.workflow_name is None:
                rec.workflow_name = _istr(attrs.workflow_name)
            if rec.block_name is None:
                rec.block_name = _istr(attrs.block_name)
            if rec.worker is None:
                rec.worker = _istr(attrs.worker)
            if not rec.depends_on and attrs.depends_on:
                rec.depends_on = tuple(attrs.depends_on)
            if rec.cpu_time_s is None:
                rec.cpu_time_s = attrs.cpu_time_s
            if rec.peak_rss_bytes is None and attrs.peak_rss_bytes is not None:
                rec.peak_rss_bytes = attrs.peak_rss_bytes
            if sp.events and _NONE in n[o + 1 : o + 3]:  # Resolved/Submitted only in the span
                for name, t in sp.events:
                    i = _SLOT_INDEX.get(name)
                    if i is not None and n[o + i] == _NONE and _NONE < t < 2**63:
                        n[o + i] = t
            if rec.status == "failed":
                rec.error_message = rec.error_message or sp.error_message
                if attrs.stacktrace:
                    self.data.stacktraces.setdefault(rec.error_type or "Exception", attrs.stacktrace)
            return
        if rec.name is None:
            rec.name = _istr(attrs.task_name or sp.name)
        if rec.workflow_id is None:
            rec.workflow_id = _istr(attrs.workflow_id)
        if rec.workflow_name is None:
            rec.workflow_name = _istr(attrs.workflow_name)
        if rec.block_id is None:
            rec.block_id = _istr(attrs.block_id)
        if rec.block_name is None:
            rec.block_name = _istr(attrs.block_name)
        if rec.backend is None:
            rec.backend = _istr(attrs.backend)
        if rec.worker is None:
            rec.worker = _istr(attrs.worker)
        if not rec.depends_on and attrs.depends_on:
            rec.depends_on = tuple(attrs.depends_on)
        if sp.links and not rec.depends_on:  # links only stand in for unknown depends_on
            # "<span id>", or "<trace id>:<span id>" for a span in another trace
            rec.links = tuple(x.rpartition(":")[2] for x in sp.links)
        if rec.cpu_time_s is None:
            rec.cpu_time_s = attrs.cpu_time_s
        if rec.peak_rss_bytes is None:
            rec.peak_rss_bytes = attrs.peak_rss_bytes
        if sp.events:
            for name, t in sp.events:
                i = _SLOT_INDEX.get(name)
                if i is not None and n[o + i] == _NONE and _NONE < t < 2**63:
                    n[o + i] = t
        # A task span starts at TaskStarted (older runs: at TaskCreated); its creation is
        # the TaskCreated span event, else the attribute, else (older runs) the start.
        if n[o] == _NONE:
            rec.created = attrs.created_time if attrs.created_time is not None else start
        status = sp.status or attrs.task_status
        if rec.status is None or (rec.status == "incomplete" and status in TERMINAL_STATES):
            if status in TERMINAL_STATES:
                rec.status = status
                rec.ended = end if end is not None else rec.ended
            elif status == "incomplete":
                rec.status = "incomplete"  # open at stop: its end is the stop, not a real end
        if rec.status == "failed":
            rec.error_type = rec.error_type or attrs.error_type or "Exception"
            rec.error_message = rec.error_message or sp.error_message
            if attrs.stacktrace:
                self.data.stacktraces.setdefault(rec.error_type, attrs.stacktrace)

    def finish(self) -> RunData:
        data = self.data
        data.first_time, data.last_time = self.first, self.last
        # Links are upstream span ids: add the tasks they name to depends_on. The span id
        # table is built only when some task needs it (it costs ~100 bytes a task).
        span_to_task: dict[str, str] | None = None
        for rec in data.tasks.values():
            if rec.links and not rec.depends_on:
                if span_to_task is None:
                    span_to_task = {r.span_id: r.task_id for r in data.tasks.values() if r.span_id is not None}
                rec.depends_on = tuple(span_to_task[s] for s in rec.links if s in span_to_task)
            if rec.workflow_name is None and rec.workflow_id in data.workflows:
                rec.workflow_name = data.workflows[rec.workflow_id].name
            if rec.block_name is None and rec.block_id in data.blocks:
                rec.block_name = data.blocks[rec.block_id].name
            if rec.name is None:
                rec.name = "task"
        return data


def _decode_attrs(raw: msgspec.Raw) -> dict[str, Any] | None:
    try:
        attrs = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    return attrs if isinstance(attrs, dict) and attrs else None


def collect(run: Run) -> RunData:
    """Build the tables of ``run`` in one unordered pass over its lines.

    Lines are decoded straight into typed views holding only the fields used (see
    :mod:`otelflow.analysis._lines`).

    Args:
        run: The run to read.

    Returns:
        Its :class:`RunData`. Memory grows with the number of tasks and scopes.
    """
    c = _Collector()
    sections = c.data.section_counts
    # The records hold no reference cycles; the cyclic GC would only re-scan millions of
    # them again and again while they are built (a third of the time at 10⁶ tasks).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _read(run, c, sections)
    finally:
        if gc_was_enabled:
            gc.enable()
    return c.finish()


def _read(run: Run, c: _Collector, sections: dict[str, int]) -> None:
    run._scan(c.event, c.span, sections)
