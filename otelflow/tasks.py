"""The task-tracking API that execution engines (and users) call, and ``@task``.

An engine calls one :class:`TaskTracker` method per lifecycle step::

    tracker = otelflow.tracker(backend="my-engine")
    tid = tracker.created("t1", "load", depends_on=["t0"])
    tracker.submitted(tid)
    tracker.started(tid, worker="w3")          # ideally measured where the task runs
    tracker.completed(tid)                     # or failed(tid, exc) / canceled(tid)

``TaskResolved`` is derived by the dispatcher when the last upstream task (from
``depends_on``) reaches a terminal state — immediately if there is none; an engine that
knows better may call :meth:`TaskTracker.resolved` itself. Every method takes an optional
``event_time`` (ns since the epoch) for steps measured elsewhere (a worker process).

All methods are thread-safe, cost about a microsecond, never raise into the engine, and
do nothing while no telemetry is running. Task ids must be unique within a session.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace

from otelflow import _global, _otel_compat, validate
from otelflow._task_context import task_id_var
from otelflow.errors import ConfigError
from otelflow.events.model import (
    TaskCanceled,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskQueued,
    TaskResolved,
    TaskStarted,
    TaskSubmitted,
    new_event_id,
    now_ns,
)
from otelflow.events.stacktrace import bound_stacktrace, format_stacktrace
from otelflow.tracing import ids

if TYPE_CHECKING:
    from otelflow.session import Telemetry
    from otelflow.toolkit import Outcome

__all__ = ["TaskTracker", "error_type_name", "task", "tracker"]

F = TypeVar("F", bound=Callable[..., Any])
_NO_CTX: tuple[str | None, str | None, str | None] = (None, None, None)
_T_MIN, _T_MAX = validate.TIME_MIN_NS, validate.TIME_MAX_NS
_get_scope = _global.scope_var.get  # the innermost workflow/block scope (otelflow.scope)
_get_current_span = otel_trace.get_current_span


def _span_key() -> str | None:
    """The context key OTel keeps the current span under, found with its public API; None
    if that no longer holds (then every lookup takes ``get_current_span``)."""
    probe = otel_trace.NonRecordingSpan(otel_trace.INVALID_SPAN_CONTEXT)
    ctx = otel_trace.set_span_in_context(probe, otel_context.Context())
    keys = [key for key, value in ctx.items() if value is probe]
    return keys[0] if len(keys) == 1 and otel_trace.get_current_span(ctx) is probe else None


_SPAN_KEY = _span_key()


class _ProcessTag:
    """A random tag per process, redrawn in a forked child: generated task ids (and so
    their span ids) never repeat across a parent and its forked workers."""

    value = f"{random.getrandbits(24):06x}"

    @classmethod
    def redraw(cls) -> None:
        cls.value = f"{random.getrandbits(24):06x}"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ProcessTag.redraw)
_MAX_MESSAGE = 2000
_thread_time_ns = time.thread_time_ns
_SAMPLED = otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED)
_enter_task = task_id_var.set
_reset_task = task_id_var.reset
_otel_var = _otel_compat.context_var()
if _otel_var is not None:  # OTel's context variable itself: attach/detach without two calls around each
    _get_context: Callable[[], otel_context.Context] = _otel_var.get
    _attach: Callable[[otel_context.Context], object] = _otel_var.set
    _reset_context = _otel_var.reset
else:  # pragma: no cover - another runtime context (OTEL_PYTHON_CONTEXT)
    _get_context = otel_context.get_current
    _attach = otel_context.attach
    _reset_context = otel_context.detach


def _detach(token: Any) -> None:
    """``context.detach(token)``; never raises (a failure is logged by OTel, as detach does)."""
    try:
        _reset_context(token)
    except Exception:  # noqa: BLE001 - another context's token: let OTel log it as its detach does
        otel_context.detach(token)


def error_type_name(exc: BaseException | type[BaseException]) -> str:
    """Qualified name of an exception type: ``ValueError`` or ``pkg.mod.MyError``."""
    tp = exc if isinstance(exc, type) else type(exc)
    mod = tp.__module__
    return tp.__qualname__ if mod in ("builtins", "__main__") else f"{mod}.{tp.__qualname__}"


class TaskTracker:
    """Records task lifecycle steps as events on the current (or a given) telemetry.

    Args:
        backend: Engine name recorded on every task (a metric attribute), e.g. ``"threads"``.
        telemetry: Record on this telemetry instead of the process's current one.
    """

    def __init__(self, backend: str | None = None, telemetry: Telemetry | None = None) -> None:
        self.backend = backend
        self._telemetry = telemetry
        # task id -> (name, workflow id, block id), from created() until the terminal step,
        # so later events carry the same context without the engine passing it again.
        self._ctx: dict[str, tuple[str | None, str | None, str | None]] = {}
        self._prefix = f"t{random.getrandbits(24):06x}-"
        self._counter = itertools.count(1)

    def _tel(self) -> Telemetry | None:
        tel = self._telemetry or _global._current
        if tel is None or not tel.active:
            return None
        return tel

    def new_task_id(self) -> str:
        """Return a fresh task id, unique within this process."""
        return f"{self._prefix}{_ProcessTag.value}-{next(self._counter)}"

    # Every step below inlines the common case (telemetry running, a str id, no event time
    # or a plausible one) and leaves anything else to the module's _fix_* helpers.

    def created(
        self,
        task_id: str | None = None,
        name: str = "task",
        *,
        depends_on: Iterable[str] = (),
        attributes: dict[str, str | int | float | bool] | None = None,
        event_time: int | None = None,
    ) -> str:
        """Record that a task was defined, in the caller's workflow/block scope.

        Args:
            task_id: Unique id; generated if None.
            name: The task's name or type — a metric attribute, keep it low-cardinality.
            depends_on: Ids of upstream tasks; ``TaskResolved`` follows the last of them.
            attributes: Extra span attributes for this task (per-task values are fine here).
            event_time: When it happened (ns since the epoch); now if None.

        Returns:
            The task id.
        """
        if task_id is None:
            task_id = f"{self._prefix}{_ProcessTag.value}-{next(self._counter)}"
        tel = self._telemetry or _global._current
        if tel is None or not tel.active:
            return task_id if type(task_id) is str else validate.clean_id(task_id)
        # The common case costs two type checks; anything else is fixed and counted.
        if type(task_id) is not str or not task_id.isascii() or not task_id:
            task_id = _fix_id(tel, task_id) or self.new_task_id()
        if type(name) is not str or not name.isascii():
            name = _fix_name(tel, name)
        if event_time is not None and (type(event_time) is not int or not _T_MIN <= event_time <= _T_MAX):
            event_time = _fix(tel, "event_time", event_time, validate.clean_time(event_time))
        if attributes is not None:
            given = attributes
            attributes, fixed = validate.clean_attributes(given)
            if fixed:
                _fix(tel, "attributes", given, None)
        scope = _get_scope()
        if scope is None:
            wf = blk = None
        else:
            wf_scope = scope.workflow
            wf = wf_scope.id if wf_scope is not None else None
            blk = scope.id if scope.kind == "block" else None
        self._ctx[task_id] = (name, wf, blk)
        t = now_ns()
        tel.bus_put(
            TaskCreated(
                event_id=new_event_id(),
                event_time=event_time or t,
                emit_time=t,
                session_id=tel.session_id,
                workflow_id=wf,
                block_id=blk,
                task_id=task_id,
                task_name=name,
                depends_on=_as_ids(depends_on) if depends_on else (),
                backend=self.backend,
                attributes=attributes,
                parent_span_id=_parent_span(tel, scope),
            )
        )
        return task_id

    def _step(self, cls: Any, task_id: str, event_time: int | None) -> None:
        """Put one plain lifecycle event (no fields of its own) on the bus."""
        tel = self._telemetry or _global._current
        if tel is None or not tel.active:
            return
        if event_time is not None or type(task_id) is not str or not task_id.isascii() or not task_id:
            checked = _check_step(tel, task_id, event_time)
            if checked is None:
                return
            task_id, event_time = checked
        name, wf, blk = self._ctx.get(task_id, _NO_CTX)
        t = now_ns()
        tel.bus_put(
            cls(
                event_id=new_event_id(),
                event_time=event_time or t,
                emit_time=t,
                session_id=tel.session_id,
                workflow_id=wf,
                block_id=blk,
                task_id=task_id,
                task_name=name,
            )
        )

    def _terminal(self, tel: Telemetry, cls: Any, task_id: str, event_time: int | None, **fields: Any) -> None:
        """Put a terminal event on the bus and forget the task's context (failed, canceled)."""
        if event_time is not None or type(task_id) is not str or not task_id.isascii() or not task_id:
            checked = _check_step(tel, task_id, event_time)
            if checked is None:
                return
            task_id, event_time = checked
        name, wf, blk = self._ctx.pop(task_id, _NO_CTX)
        t = now_ns()
        tel.bus_put(
            cls(
                event_id=new_event_id(),
                event_time=event_time or t,
                emit_time=t,
                session_id=tel.session_id,
                workflow_id=wf,
                block_id=blk,
                task_id=task_id,
                task_name=name,
                **fields,
            )
        )

    def _forget(self, task_id: object) -> None:
        """A terminal step with no telemetry running: only forget the task's context."""
        self._ctx.pop(task_id if type(task_id) is str else validate.clean_id(task_id), None)

    def resolved(self, task_id: str, event_time: int | None = None) -> None:
        """Record that all of the task's dependencies are satisfied."""
        self._step(TaskResolved, task_id, event_time)

    def submitted(self, task_id: str, event_time: int | None = None) -> None:
        """Record that the task was handed to the engine."""
        self._step(TaskSubmitted, task_id, event_time)

    def queued(self, task_id: str, event_time: int | None = None) -> None:
        """Record that the task waits in the engine's queue for a worker."""
        self._step(TaskQueued, task_id, event_time)

    def started(
        self,
        task_id: str,
        event_time: int | None = None,
        *,
        worker: str | None = None,
        pid: int | None = None,
    ) -> None:
        """Record that the task began running (pass the worker-side time if you have it)."""
        tel = self._telemetry or _global._current
        if tel is None or not tel.active:
            return
        if (worker is not None and type(worker) is not str) or (pid is not None and type(pid) is not int):
            worker, pid = _fix_worker(tel, worker, pid)
        if event_time is not None or type(task_id) is not str or not task_id.isascii() or not task_id:
            checked = _check_step(tel, task_id, event_time)
            if checked is None:
                return
            task_id, event_time = checked
        name, wf, blk = self._ctx.get(task_id, _NO_CTX)
        t = now_ns()
        tel.bus_put(
            TaskStarted(
                event_id=new_event_id(),
                event_time=event_time or t,
                emit_time=t,
                session_id=tel.session_id,
                workflow_id=wf,
                block_id=blk,
                task_id=task_id,
                task_name=name,
                worker=worker,
                pid=pid,
            )
        )

    def completed(
        self,
        task_id: str,
        event_time: int | None = None,
        *,
        cpu_time_s: float | None = None,
        peak_rss_bytes: int | None = None,
        attributes: dict[str, str | int | float | bool] | None = None,
    ) -> None:
        """Record that the task finished successfully.

        ``attributes`` are span attributes known only now (e.g. the result came from a
        cache); they add to those given to :meth:`created`.
        """
        tel = self._telemetry or _global._current
        if tel is None or not tel.active:
            self._forget(task_id)
            return
        if cpu_time_s is not None or peak_rss_bytes is not None:
            cpu_time_s, peak_rss_bytes = _fix_usage(tel, cpu_time_s, peak_rss_bytes)
        if attributes is not None:
            attributes = _clean_attributes(tel, attributes)
        if event_time is not None or type(task_id) is not str or not task_id.isascii() or not task_id:
            checked = _check_step(tel, task_id, event_time)
            if checked is None:
                return
            task_id, event_time = checked
        name, wf, blk = self._ctx.pop(task_id, _NO_CTX)
        t = now_ns()
        tel.bus_put(
            TaskCompleted(
                event_id=new_event_id(),
                event_time=event_time or t,
                emit_time=t,
                session_id=tel.session_id,
                workflow_id=wf,
                block_id=blk,
                task_id=task_id,
                task_name=name,
                cpu_time_s=cpu_time_s,
                peak_rss_bytes=peak_rss_bytes,
                attributes=attributes,
            )
        )

    def failed(
        self,
        task_id: str,
        error: BaseException | str,
        event_time: int | None = None,
        *,
        message: str | None = None,
        cpu_time_s: float | None = None,
        peak_rss_bytes: int | None = None,
        stacktrace: str | None = None,
        attributes: dict[str, str | int | float | bool] | None = None,
    ) -> None:
        """Record that the task failed with ``error`` (an exception, or its type name).

        ``stacktrace`` (bounded to 8 KiB) defaults to the exception's own traceback.
        ``attributes`` as for :meth:`completed`.
        """
        tel = self._telemetry or _global._current
        if tel is None or not tel.active:
            self._forget(task_id)
            return
        etype, message, stacktrace = _error_fields(error, message, stacktrace)
        if cpu_time_s is not None or peak_rss_bytes is not None:
            cpu_time_s, peak_rss_bytes = _fix_usage(tel, cpu_time_s, peak_rss_bytes)
        if attributes is not None:
            attributes = _clean_attributes(tel, attributes)
        self._terminal(
            tel,
            TaskFailed,
            task_id,
            event_time,
            error_type=etype,
            error_message=message,
            cpu_time_s=cpu_time_s,
            peak_rss_bytes=peak_rss_bytes,
            stacktrace=stacktrace,
            attributes=attributes,
        )

    def canceled(self, task_id: str, event_time: int | None = None, *, reason: str | None = None) -> None:
        """Record that the task was canceled."""
        tel = self._telemetry or _global._current
        if tel is None or not tel.active:
            self._forget(task_id)
            return
        if reason is not None and (type(reason) is not str or not reason.isascii()):
            reason = validate.clean_text(reason)
        self._terminal(tel, TaskCanceled, task_id, event_time, reason=reason)

    def record_outcome(self, task_id: str, outcome: Outcome) -> None:
        """Record a task measured where it ran: ``TaskStarted`` and its terminal step.

        ``outcome`` comes from :class:`otelflow.toolkit.Measured` (returned with the result,
        or attached to the raised exception); its worker-side times, CPU seconds, peak RSS
        and error (type, message, stacktrace) are recorded as they are.
        """
        try:
            start, end = int(outcome.start_ns), int(outcome.end_ns)
        except (AttributeError, TypeError, ValueError):
            return  # not an Outcome: nothing trustworthy to record
        self.started(task_id, start, worker=outcome.worker, pid=outcome.pid)
        if outcome.error_type is None:
            self.completed(task_id, end, cpu_time_s=outcome.cpu_time_s, peak_rss_bytes=outcome.peak_rss_bytes)
        else:
            self.failed(
                task_id,
                outcome.error_type,
                end,
                message=outcome.error_message,
                cpu_time_s=outcome.cpu_time_s,
                peak_rss_bytes=outcome.peak_rss_bytes,
                stacktrace=outcome.stacktrace,
            )

    def traceparent(self, task_id: str) -> str | None:
        """W3C ``traceparent`` of the task's span, to carry to a worker; None if not running."""
        tel = self._tel()
        if tel is None:
            return None
        return tel.task_traceparent(task_id)

    def span_context(self, task_id: str) -> otel_trace.SpanContext | None:
        """The task span's OTel ``SpanContext`` (to parent spans made inside the task)."""
        tel = self._tel()
        if tel is None:
            return None
        return tel.span_context(tel.task_span_id(task_id))

    def enter(self, task_id: str) -> TaskEntry | None:
        """Make task ``task_id`` current here, for the work it runs in this thread or context.

        Its span becomes the current OTel span (spans and tasks made inside are its
        children; the span's ``SpanContext`` is derived only if something asks for it), and
        log records name the task. Undo with :meth:`leave` in the same context. Returns None,
        changing nothing, when no telemetry runs or ``task_id`` is not an id. Never raises.
        """
        tel = self._telemetry or _global._current
        if tel is None or not tel.active:
            return None
        if type(task_id) is not str or not task_id.isascii() or not task_id:
            checked = _check_step(tel, task_id, None)  # the id the steps recorded, cleaned alike
            if checked is None:
                return None
            task_id = checked[0]
        trace_wf = None
        if tel.settings.trace_per == "workflow":  # the task's trace is its workflow's
            known = self._ctx.get(task_id)
            if known is not None:  # the workflow it was created in, as the dispatcher has it
                trace_wf = known[1]
            else:  # created by another tracker: the scope current here
                scope = _get_scope()
                wf_scope = scope.workflow if scope is not None else None
                trace_wf = wf_scope.id if wf_scope is not None else None
        span = _TaskSpan((tel.trace_id_int, trace_wf, task_id))
        return (_attach(otel_trace.set_span_in_context(span, _get_context())), _enter_task(task_id))

    @staticmethod
    def leave(entry: TaskEntry | None) -> None:
        """Undo :meth:`enter`. Never raises: None is ignored; an entry made in another
        context, or left already, changes nothing here (OTel logs it, as its ``detach`` does)."""
        if entry is not None:
            _leave_task(entry[0], entry[1])


TaskEntry = tuple[object, object]
"""What :meth:`TaskTracker.enter` made current (the OTel context and task-id tokens)."""


def _as_ids(depends_on: Iterable[str] | str | None) -> tuple[str, ...]:
    """``depends_on`` as a tuple of ids: one str is one id; anything else is str()-ed."""
    if not depends_on:
        return ()
    if isinstance(depends_on, str):
        return (depends_on if depends_on.isascii() else validate.clean_id(depends_on),)
    try:
        return tuple(d if type(d) is str and d.isascii() else validate.clean_id(d) for d in depends_on)
    except TypeError:  # not iterable: record it as one id rather than raise into the engine
        return (validate.clean_id(depends_on),)


_last_parent: tuple[object, object, int, str | None] = (None, None, 0, None)
"""The last :func:`_parent_span` answer: (span in the context, scope, trace id, answer)."""


def _parent_span(tel: Telemetry, scope: Any, current: otel_context.Context | None = None) -> str | None:
    """The current span's id (hex) when a task made now hangs under it rather than its scope.

    Inside a running task (or a user span) the current span is not the scope's own: the
    new task hangs under it. The answer depends only on the span object, the scope and the
    trace, all immutable, so the last one is kept: tasks made one after another in a scope
    look at the same span (the scope's) and cost one context lookup and three ``is``.
    """
    global _last_parent
    if current is None:
        current = _get_context()
    if _SPAN_KEY is None:  # pragma: no cover - an OTel API that keeps the span elsewhere
        return _parent_of(_get_current_span(current), tel, scope)
    span = current.get(_SPAN_KEY)
    last = _last_parent
    if span is last[0] and scope is last[1] and tel.trace_id_int == last[2]:
        return last[3]
    if type(span) is _TaskSpan or type(span) is otel_trace.NonRecordingSpan:
        parent = _parent_of(span, tel, scope)
    else:  # none, an SDK span, or anything: as get_current_span() sees it
        parent = _parent_of(_get_current_span(current), tel, scope)
    _last_parent = (span, scope, tel.trace_id_int, parent)
    return parent


def _parent_of(span: otel_trace.Span, tel: Telemetry, scope: Any) -> str | None:
    span_ctx = span.get_span_context()
    if (
        span_ctx.is_valid
        # The new task's own trace: with a trace per workflow, its workflow's (a task made
        # inside another task of that workflow hangs under it, as in a session trace).
        and span_ctx.trace_id == tel.current_trace_id()
        and (scope is None or span_ctx.span_id != scope.span_id)
    ):
        return f"{span_ctx.span_id:016x}"
    return None


def _error_fields(
    error: BaseException | str, message: str | None, stacktrace: str | None
) -> tuple[str, str, str | None]:
    """A failure's ``(error_type, error_message, stacktrace)`` as a ``TaskFailed`` holds them."""
    if stacktrace is None and isinstance(error, BaseException):
        stacktrace = format_stacktrace(error)
    elif stacktrace is not None:
        stacktrace = bound_stacktrace(str(stacktrace))
    if isinstance(error, BaseException):
        etype = error_type_name(error)
        if message is None:
            try:
                message = str(error)
            except Exception:  # noqa: BLE001 - a broken __str__
                message = "<unprintable>"
    else:
        etype = validate.clean_text(error, 256)
    if type(message) is not str or not message.isascii():
        message = validate.clean_text(message) if message is not None else None
    if stacktrace is not None and (type(stacktrace) is not str or not stacktrace.isascii()):
        stacktrace = validate.clean_text(stacktrace, 1 << 20)
    return etype, (message or "")[:_MAX_MESSAGE], stacktrace


def _check_step(tel: Telemetry, task_id: object, event_time: object) -> tuple[str, int | None] | None:
    """A later step's task id and event time, each fixed (and counted) if it is not the plain
    kind; None (refused, counted) when there is no task to record it for."""
    if type(task_id) is not str or not task_id.isascii() or not task_id:
        checked = _check_id(tel, task_id)
        if checked is None:
            return None
        task_id = checked
    if event_time is not None and (type(event_time) is not int or not _T_MIN <= event_time <= _T_MAX):
        event_time = _fix(tel, "event_time", event_time, validate.clean_time(event_time))
    return task_id, event_time  # type: ignore[return-value]


def _check_id(tel: Telemetry, task_id: object) -> str | None:
    """A later step's task id that is not a plain ASCII str: fixed, or None (refused, counted)
    when there is no task to record it for."""
    if task_id is None or task_id == "":
        tel.invalid_argument("task_id", task_id)
        return None
    return _fix_id(tel, task_id)


def _clean_attributes(tel: Telemetry | None, given: Any) -> Any:
    """``given`` as span attributes JSON and OTel can hold; a fix is counted (and warned once)."""
    attributes, fixed = validate.clean_attributes(given)
    if fixed:
        _fix(tel, "attributes", given, None)
    return attributes


def _fix(tel: Telemetry | None, what: str, bad: object, fixed: Any) -> Any:
    """Count (and warn once about) a tracker argument that had to be fixed or left out."""
    if tel is not None:
        tel.invalid_argument(what, bad)
    return fixed


def _fix_id(tel: Telemetry, task_id: object) -> str:
    clean = validate.clean_id(task_id)
    if type(task_id) is str and clean == task_id and clean:
        return clean  # non-ASCII but valid text: nothing to count
    if type(task_id) is not int:  # an int id is a common, harmless choice: not counted
        tel.invalid_argument("task_id", task_id)
    return clean


def _fix_name(tel: Telemetry, name: object) -> str:
    if name is None:
        return "task"
    clean = validate.clean_text(name)
    if clean != name or type(name) is not str:
        tel.invalid_argument("name", name)
    return clean


def _fix_worker(tel: Telemetry | None, worker: object, pid: object) -> tuple[str | None, int | None]:
    if worker is not None and type(worker) is not str:
        worker = _fix(tel, "worker", worker, validate.clean_text(worker, 256))
    if pid is not None and type(pid) is not int:
        pid = _fix(tel, "pid", pid, validate.clean_count(pid))
    return worker, pid  # type: ignore[return-value]


def _fix_usage(tel: Telemetry | None, cpu: object, rss: object) -> tuple[float | None, int | None]:
    """CPU seconds and peak RSS checked: a wrong one is left out (the step is still kept)."""
    cpu_ok = validate.clean_seconds(cpu) if cpu is not None else None
    if cpu is not None and (cpu_ok is None or isinstance(cpu, str | bool)):
        _fix(tel, "cpu_time_s", cpu, None)
        cpu_ok = None
    rss_ok = validate.clean_count(rss) if rss is not None else None
    if rss is not None and rss_ok is None:
        _fix(tel, "peak_rss_bytes", rss, None)
    return cpu_ok, rss_ok


_default_tracker = TaskTracker(backend="inline")


def tracker(backend: str | None = None, telemetry: Telemetry | None = None) -> TaskTracker:
    """Return a :class:`TaskTracker` for an engine named ``backend``.

    Args:
        backend: The engine's name, recorded on every task (a metric attribute).
        telemetry: Record on this telemetry; by default on whichever is current at each call.
    """
    return TaskTracker(backend=backend, telemetry=telemetry)


@overload
def task(func: F, /) -> F: ...
@overload
def task(*, name: str | None = None, backend: str = "inline") -> Callable[[F], F]: ...


def task(func: F | None = None, /, *, name: str | None = None, backend: str = "inline") -> F | Callable[[F], F]:
    """Record each call of a function (sync or async) as a task.

    The call is one task: created and started when called, completed when it returns,
    failed if it raises (the exception still propagates), canceled if an async call is
    canceled. While it runs, the task span is the current OTel span, so spans made
    inside are its children. Use as ``@otelflow.task`` or ``@otelflow.task(name="x")``.
    """

    if name is not None and (not isinstance(name, str) or not name):
        raise ConfigError(f"@otelflow.task(name=...) takes a non-empty string, not {name!r}; e.g. name={str(name)!r}.")

    def decorate(fn: F) -> F:
        task_name = name or fn.__qualname__
        trk = TaskTracker(backend=backend)  # its id prefix and counter name this function's calls
        # The name is checked once, here, as created() would check it at every call; a name
        # that had to be fixed is still counted at every call.
        clean_name = task_name if task_name.isascii() else validate.clean_text(task_name)
        bad_name = task_name if clean_name != task_name else None

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                tel = _global._current
                if tel is None or not tel.active:
                    return await fn(*args, **kwargs)
                call = _begin_call(tel, trk, clean_name, bad_name)
                try:
                    result = await fn(*args, **kwargs)
                except asyncio.CancelledError:
                    _end_call(tel, call, TaskCanceled, reason="cancelled")
                    raise
                except BaseException as exc:
                    _end_failed(tel, call, exc, None)
                    raise
                finally:
                    _exit_call(call)
                _end_call(tel, call, TaskCompleted)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            tel = _global._current
            if tel is None or not tel.active:
                return fn(*args, **kwargs)
            call = _begin_call(tel, trk, clean_name, bad_name)
            cpu0 = _thread_time_ns()  # CPU of this thread only: the task runs in it
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                _end_failed(tel, call, exc, (_thread_time_ns() - cpu0 + 500) // 1000 / 1e6)
                raise
            finally:
                _leave_task(call[4], call[5])
            cpu = (_thread_time_ns() - cpu0 + 500) // 1000 / 1e6  # seconds, to the microsecond
            if tel.active:  # stopped meanwhile: record nothing more, as the tracker would
                t = now_ns()
                tel.bus_put(
                    TaskCompleted(
                        event_id=new_event_id(),
                        event_time=t,
                        emit_time=t,
                        session_id=tel.session_id,
                        workflow_id=call[1],
                        block_id=call[2],
                        task_id=call[0],
                        task_name=clean_name,
                        cpu_time_s=cpu,
                    )
                )
            return result

        return wrapper  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate


# -- @task's calls -------------------------------------------------------------------------------
#
# A decorated call knows all a tracker would look up or check (its name, checked once; its id,
# made here; its scope, read once), so it builds its events directly: what created(),
# started() and completed() would record, on the telemetry current when the call began.

_Call = tuple[str, str | None, str | None, str, object, object]
"""A running ``@task`` call: task id, workflow id, block id, name, OTel and task-id tokens."""


class _TaskSpan(otel_trace.NonRecordingSpan):
    """A running ``@task`` call's span as the current OTel span.

    Its ``SpanContext`` — the span id the dispatcher derives for the task (a keyed BLAKE2b
    of its id, :func:`otelflow.tracing.ids.task_span_id`), in the trace current when the
    call began — is made the first time something asks for it (a span or task made inside,
    a log record), not at every call.
    """

    _made: otel_trace.SpanContext | None = None

    def __init__(self, span_ids: tuple[int, str | None, str]) -> None:
        # (session trace id, workflow id with a trace per workflow else None, task id)
        self._ids = span_ids

    def get_span_context(self) -> otel_trace.SpanContext:
        ctx = self._made
        if ctx is None:
            trace, workflow_id, task_id = self._ids
            span_id = ids.task_span_id(trace, task_id)
            if workflow_id is not None:
                trace = ids.workflow_trace_id(trace, workflow_id)
            ctx = self._made = otel_trace.SpanContext(trace, span_id, False, _SAMPLED)
        return ctx

    @property  # what NonRecordingSpan keeps its context in
    def _context(self) -> otel_trace.SpanContext:
        return self.get_span_context()

    @_context.setter
    def _context(self, value: otel_trace.SpanContext) -> None:
        self._made = value

    def __repr__(self) -> str:
        return f"NonRecordingSpan({self.get_span_context()!r})"


def _begin_call(tel: Telemetry, trk: TaskTracker, name: str, bad_name: str | None) -> _Call:
    """Record a ``@task`` call as created and started; make its span and id current."""
    if bad_name is not None:
        tel.invalid_argument("name", bad_name)
    task_id = f"{trk._prefix}{_ProcessTag.value}-{next(trk._counter)}"
    scope = _get_scope()
    if scope is None:
        wf = blk = None
    else:
        wf_scope = scope.workflow
        wf = wf_scope.id if wf_scope is not None else None
        blk = scope.id if scope.kind == "block" else None
    # As in created(): under a span other than its scope's own (another task's), the task
    # hangs under that span. The current context is read once, for this and for the attach.
    current = _get_context()
    parent = _parent_span(tel, scope, current)
    put = tel.bus_put
    session_id = tel.session_id
    t = now_ns()
    put(
        TaskCreated(
            event_id=new_event_id(),
            event_time=t,
            emit_time=t,
            session_id=session_id,
            workflow_id=wf,
            block_id=blk,
            task_id=task_id,
            task_name=name,
            backend=trk.backend,
            parent_span_id=parent,
        )
    )
    trace_wf = wf if wf is not None and tel.settings.trace_per == "workflow" else None
    span = _TaskSpan((tel.trace_id_int, trace_wf, task_id))
    otel_token = _attach(otel_trace.set_span_in_context(span, current))
    task_token = _enter_task(task_id)  # what the task logs names it
    if tel.active:
        t = now_ns()
        put(
            TaskStarted(
                event_id=new_event_id(),
                event_time=t,
                emit_time=t,
                session_id=session_id,
                workflow_id=wf,
                block_id=blk,
                task_id=task_id,
                task_name=name,
            )
        )
    return (task_id, wf, blk, name, otel_token, task_token)


def _exit_call(call: _Call) -> None:
    """Undo what :func:`_begin_call` made current (a token from another context is ignored)."""
    _leave_task(call[4], call[5])


def _leave_task(otel_token: object, task_token: object) -> None:
    """Undo a task's span and id made current (by a ``@task`` call or :meth:`TaskTracker.enter`)."""
    try:
        _reset_task(task_token)  # type: ignore[arg-type]
    except (ValueError, RuntimeError):  # another context's token, or one used already
        pass
    _detach(otel_token)


def _end_call(tel: Telemetry, call: _Call, cls: Any, **fields: Any) -> None:
    """Record a ``@task`` call's terminal step (unless its telemetry stopped meanwhile)."""
    if not tel.active:
        return
    t = now_ns()
    tel.bus_put(
        cls(
            event_id=new_event_id(),
            event_time=t,
            emit_time=t,
            session_id=tel.session_id,
            workflow_id=call[1],
            block_id=call[2],
            task_id=call[0],
            task_name=call[3],
            **fields,
        )
    )


def _end_failed(tel: Telemetry, call: _Call, exc: BaseException, cpu_time_s: float | None) -> None:
    """Record a ``@task`` call that raised ``exc``: as :meth:`TaskTracker.failed` would."""
    if not tel.active:
        return
    etype, message, stacktrace = _error_fields(exc, None, None)
    _end_call(
        tel,
        call,
        TaskFailed,
        error_type=etype,
        error_message=message,
        cpu_time_s=cpu_time_s,
        stacktrace=stacktrace,
    )
