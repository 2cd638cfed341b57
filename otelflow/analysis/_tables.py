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

from dataclasses import dataclass, field
from sys import intern
from typing import TYPE_CHECKING, Any

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
_TIME_SLOT = {
    "TaskCreated": "created",
    "TaskResolved": "resolved",
    "TaskSubmitted": "submitted",
    "TaskQueued": "queued",
    "TaskStarted": "started",
}
_NS = 1e9


class TaskInfo:
    """Everything the run recorded about one task. Times are ns since the epoch or None."""

    __slots__ = (
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

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.name: str | None = None
        self.workflow_id: str | None = None
        self.workflow_name: str | None = None
        self.block_id: str | None = None
        self.block_name: str | None = None
        self.backend: str | None = None
        self.worker: str | None = None
        self.pid: int | None = None
        self.depends_on: tuple[str, ...] = ()
        self.links: tuple[str, ...] = ()
        self.span_id: str | None = None
        self.created: int | None = None
        self.resolved: int | None = None
        self.submitted: int | None = None
        self.queued: int | None = None
        self.started: int | None = None
        self.ended: int | None = None
        #: Terminal state, ``"incomplete"`` (open when the session stopped), or None.
        self.status: str | None = None
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.cancel_reason: str | None = None
        self.cpu_time_s: float | None = None
        self.peak_rss_bytes: int | None = None
        self.attributes: dict[str, Any] | None = None

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

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (times in ns, waits in seconds)."""
        out: dict[str, Any] = {slot: getattr(self, slot) for slot in self.__slots__}
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

    def add(self, line: dict[str, Any]) -> None:
        self.samples += 1
        for f in self._FIELDS:
            v = line.get(f)
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
        self.span_to_task: dict[str, str] = {}
        self.first: int | None = None
        self.last: int | None = None

    def task(self, task_id: str) -> TaskInfo:
        rec = self.data.tasks.get(task_id)
        if rec is None:
            rec = self.data.tasks[task_id] = TaskInfo(task_id)
        return rec

    def scope(self, kind: str, sid: str) -> ScopeInfo:
        table = self.data.workflows if kind == "workflow" else self.data.blocks
        rec = table.get(sid)
        if rec is None:
            rec = table[sid] = ScopeInfo(kind, sid)
        return rec

    def seen(self, t: Any) -> None:
        if type(t) is int:
            if self.first is None or t < self.first:
                self.first = t
            if self.last is None or t > self.last:
                self.last = t

    # -- events -----------------------------------------------------------------------------

    def event(self, ev: dict[str, Any]) -> None:
        typ = ev.get("type")
        if not isinstance(typ, str):
            typ = "?"
        counts = self.data.event_counts
        counts[typ] = counts.get(typ, 0) + 1
        t = ev.get("event_time")
        if type(t) is int:
            if self.first is None or t < self.first:
                self.first = t
            if self.last is None or t > self.last:
                self.last = t
        else:
            t = None
        slot = _TIME_SLOT.get(typ)
        terminal = _TERMINAL_EVENTS.get(typ) if slot is None else None
        if slot is not None or terminal is not None:
            tid = ev.get("task_id")
            if not isinstance(tid, str):
                return
            rec = self.data.tasks.get(tid)
            if rec is None:
                rec = self.data.tasks[tid] = TaskInfo(tid)
            if rec.name is None:
                rec.name = _istr(ev.get("task_name"))
            if rec.workflow_id is None:
                rec.workflow_id = _istr(ev.get("workflow_id"))
            if rec.block_id is None:
                rec.block_id = _istr(ev.get("block_id"))
            if slot is not None:
                if t is not None:
                    cur = getattr(rec, slot)
                    if cur is None or t < cur:
                        setattr(rec, slot, t)
                if typ == "TaskCreated":
                    deps = ev.get("depends_on")
                    if deps and not rec.depends_on:
                        rec.depends_on = tuple(str(d) for d in deps)
                    if rec.backend is None:
                        rec.backend = _istr(ev.get("backend"))
                    attrs = ev.get("attributes")
                    if attrs and rec.attributes is None:
                        rec.attributes = dict(attrs)
                elif typ == "TaskStarted":
                    rec.worker = rec.worker or _istr(ev.get("worker"))
                    rec.pid = rec.pid or ev.get("pid")
            else:
                if (
                    rec.status is None
                    or rec.status == "incomplete"
                    or (t is not None and rec.ended is not None and t < rec.ended)
                ):
                    rec.status = terminal
                    rec.ended = t if t is not None else rec.ended
                    if terminal == "failed":
                        rec.error_type = ev.get("error_type") or "Exception"
                        rec.error_message = ev.get("error_message") or rec.error_message
                    elif terminal == "canceled":
                        rec.cancel_reason = ev.get("reason")
                elif terminal == "canceled" and rec.status == "canceled" and rec.cancel_reason is None:
                    rec.cancel_reason = ev.get("reason")  # the span line came first: it has no reason
                cpu = ev.get("cpu_time_s")
                if cpu is not None:
                    rec.cpu_time_s = cpu
                rss = ev.get("peak_rss_bytes")
                if rss is not None:
                    rec.peak_rss_bytes = rss
            return
        if typ in ("WorkflowStarted", "WorkflowEnded"):
            wid = ev.get("workflow_id")
            if not isinstance(wid, str):
                return
            rec_s = self.scope("workflow", wid)
            if typ == "WorkflowStarted":
                rec_s.start = _min(rec_s.start, t)
                rec_s.name = rec_s.name or ev.get("workflow_name")
            else:
                self._scope_ended(rec_s, ev, t)
        elif typ in ("BlockStarted", "BlockEnded"):
            bid = ev.get("block_id")
            if not isinstance(bid, str):
                return
            rec_s = self.scope("block", bid)
            rec_s.workflow_id = rec_s.workflow_id or ev.get("workflow_id")
            if typ == "BlockStarted":
                rec_s.start = _min(rec_s.start, t)
                rec_s.name = rec_s.name or ev.get("block_name")
                rec_s.parent_block_id = rec_s.parent_block_id or ev.get("parent_block_id")
            else:
                self._scope_ended(rec_s, ev, t)
        elif typ == "SessionStarted":
            self.data.session_start = _min(self.data.session_start, t)
        elif typ == "SessionEnded":
            self.data.session_end = _max(self.data.session_end, t)
        elif typ == "ResourceUpdate":
            key = f"{ev.get('scope') or 'node'}:{ev.get('node') or ''}"
            if ev.get("device") is not None:
                key += f":{ev.get('device')}"
            stats = self.data.resources.get(key)
            if stats is None:
                stats = self.data.resources[key] = ResourceStats()
            stats.add(ev)

    @staticmethod
    def _scope_ended(rec: ScopeInfo, ev: dict[str, Any], t: Any) -> None:
        rec.end = _max(rec.end, t)
        if rec.status is None:
            rec.status = ev.get("status") or "completed"
        rec.error_type = rec.error_type or ev.get("error_type")

    # -- spans ------------------------------------------------------------------------------

    def span(self, sp: dict[str, Any]) -> None:
        kind = sp.get("kind")
        start, end = sp.get("start_time"), sp.get("end_time")
        self.seen(start)
        self.seen(end)
        attrs = sp.get("attributes") or {}
        if kind == "task":
            self._task_span(sp, attrs, start, end)
        elif kind in ("workflow", "block"):
            sid = attrs.get(f"otelflow.{kind}.id")
            if not isinstance(sid, str):
                return
            rec = self.scope(kind, sid)
            rec.name = rec.name or attrs.get(f"otelflow.{kind}.name")
            rec.start = _min(rec.start, start)
            rec.end = _max(rec.end, end)
            rec.span_id = rec.span_id or sp.get("span_id")
            status = sp.get("status")
            if status and (rec.status is None or status == "incomplete"):
                rec.status = status
            if kind == "block":
                rec.workflow_id = rec.workflow_id or attrs.get("otelflow.workflow.id")
            rec.error_type = rec.error_type or attrs.get("error.type")
        elif kind == "session":
            self.data.session_start = _min(self.data.session_start, start)
            self.data.session_end = _max(self.data.session_end, end)

    def _task_span(self, sp: dict[str, Any], attrs: dict[str, Any], start: Any, end: Any) -> None:
        span_id = sp.get("span_id")
        tid = attrs.get("otelflow.task.id")
        if not isinstance(tid, str):
            if not isinstance(span_id, str):
                return
            tid = span_id
        rec = self.task(tid)
        if isinstance(span_id, str):
            rec.span_id = span_id
            self.span_to_task[span_id] = tid
        rec.name = rec.name or _istr(attrs.get("otelflow.task.name") or sp.get("name"))
        rec.workflow_id = rec.workflow_id or _istr(attrs.get("otelflow.workflow.id"))
        rec.workflow_name = rec.workflow_name or _istr(attrs.get("otelflow.workflow.name"))
        rec.block_id = rec.block_id or _istr(attrs.get("otelflow.block.id"))
        rec.block_name = rec.block_name or _istr(attrs.get("otelflow.block.name"))
        rec.backend = rec.backend or _istr(attrs.get("otelflow.task.backend"))
        rec.worker = rec.worker or _istr(attrs.get("otelflow.task.worker"))
        if not rec.depends_on:
            deps = attrs.get("otelflow.task.depends_on")
            if isinstance(deps, (list, tuple)):
                rec.depends_on = tuple(str(d) for d in deps)
        links = sp.get("links")
        if links and not rec.depends_on:  # links only stand in for unknown depends_on
            # "<span id>", or "<trace id>:<span id>" for a span in another trace
            rec.links = tuple(str(x).rpartition(":")[2] for x in links)
        phases = {k: v for k, v in attrs.items() if k.startswith(PHASE_PREFIX) and isinstance(v, (int, float))}
        if phases:  # engine-measured phases of the task (see build_report's "phases")
            rec.attributes = {**(rec.attributes or {}), **phases}
        if rec.cpu_time_s is None:
            rec.cpu_time_s = attrs.get("otelflow.task.cpu_time_s")
        if rec.peak_rss_bytes is None:
            rec.peak_rss_bytes = attrs.get("otelflow.task.peak_rss_bytes")
        for item in sp.get("events") or ():
            if not isinstance(item, (list, tuple)) or len(item) < 2:
                continue
            name, t = item[0], item[1]
            slot = _TIME_SLOT.get(name)
            if slot is not None and getattr(rec, slot) is None:
                setattr(rec, slot, t if isinstance(t, int) else None)
        # A task span starts at TaskStarted (older runs: at TaskCreated); its creation is
        # the TaskCreated span event, else the attribute, else (older runs) the start.
        if rec.created is None:
            created = attrs.get("otelflow.task.created_time")
            rec.created = created if type(created) is int else start if type(start) is int else None
        status = sp.get("status") or attrs.get("otelflow.task.status")
        if rec.status is None or (rec.status == "incomplete" and status in TERMINAL_STATES):
            if status in TERMINAL_STATES:
                rec.status = status
                rec.ended = end if isinstance(end, int) else rec.ended
            elif status == "incomplete":
                rec.status = "incomplete"  # open at stop: its end is the stop, not a real end
        if rec.status == "failed":
            rec.error_type = rec.error_type or attrs.get("error.type") or "Exception"
            rec.error_message = rec.error_message or sp.get("error_message")

    def finish(self) -> RunData:
        data = self.data
        data.first_time, data.last_time = self.first, self.last
        # Links are upstream span ids: add the tasks they name to depends_on.
        for rec in data.tasks.values():
            if rec.links and not rec.depends_on:
                rec.depends_on = tuple(self.span_to_task[s] for s in rec.links if s in self.span_to_task)
            if rec.workflow_name is None and rec.workflow_id in data.workflows:
                rec.workflow_name = data.workflows[rec.workflow_id].name  # type: ignore[index]
            if rec.block_name is None and rec.block_id in data.blocks:
                rec.block_name = data.blocks[rec.block_id].name  # type: ignore[index]
            if rec.name is None:
                rec.name = "task"
        return data


def collect(run: Run) -> RunData:
    """Build the tables of ``run`` in one unordered pass over its lines.

    Args:
        run: The run to read.

    Returns:
        Its :class:`RunData`. Memory grows with the number of tasks and scopes.
    """
    c = _Collector()
    sections = c.data.section_counts
    for line in run.lines(ordered=False):
        section = line.get("section")
        key = section if isinstance(section, str) else "?"
        sections[key] = sections.get(key, 0) + 1
        if section == "event":
            c.event(line)
        elif section == "span":
            c.span(line)
    return c.finish()
