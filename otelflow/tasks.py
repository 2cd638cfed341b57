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

from otelflow import _global, validate
from otelflow._task_context import enter_task, exit_task
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
    now_ns,
)
from otelflow.events.model import _ids as _event_ids
from otelflow.events.stacktrace import bound_stacktrace, format_stacktrace

if TYPE_CHECKING:
    from otelflow.session import Telemetry
    from otelflow.toolkit import Outcome

__all__ = ["TaskTracker", "error_type_name", "task", "tracker"]

F = TypeVar("F", bound=Callable[..., Any])
_NO_CTX: tuple[str | None, str | None, str | None] = (None, None, None)
_T_MIN, _T_MAX = validate.TIME_MIN_NS, validate.TIME_MAX_NS
_get_scope = _global.scope_var.get  # the innermost workflow/block scope (otelflow.scope)
_get_current_span = otel_trace.get_current_span


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
_thread_time = time.thread_time


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
                event_id=_event_ids._prefix | next(_event_ids._counter),
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
        if type(task_id) is not str or not task_id.isascii() or not task_id:
            checked = _check_id(tel, task_id)
            if checked is None:
                return
            task_id = checked
        if event_time is not None and (type(event_time) is not int or not _T_MIN <= event_time <= _T_MAX):
            event_time = _fix(tel, "event_time", event_time, validate.clean_time(event_time))
        name, wf, blk = self._ctx.get(task_id, _NO_CTX)
        t = now_ns()
        tel.bus_put(
            cls(
                event_id=_event_ids._prefix | next(_event_ids._counter),
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
        if type(task_id) is not str or not task_id.isascii() or not task_id:
            checked = _check_id(tel, task_id)
            if checked is None:
                return
            task_id = checked
        if event_time is not None and (type(event_time) is not int or not _T_MIN <= event_time <= _T_MAX):
            event_time = _fix(tel, "event_time", event_time, validate.clean_time(event_time))
        name, wf, blk = self._ctx.pop(task_id, _NO_CTX)
        t = now_ns()
        tel.bus_put(
            cls(
                event_id=_event_ids._prefix | next(_event_ids._counter),
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
        if type(task_id) is not str or not task_id.isascii() or not task_id:
            checked = _check_id(tel, task_id)
            if checked is None:
                return
            task_id = checked
        if event_time is not None and (type(event_time) is not int or not _T_MIN <= event_time <= _T_MAX):
            event_time = _fix(tel, "event_time", event_time, validate.clean_time(event_time))
        name, wf, blk = self._ctx.get(task_id, _NO_CTX)
        t = now_ns()
        tel.bus_put(
            TaskStarted(
                event_id=_event_ids._prefix | next(_event_ids._counter),
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
        if type(task_id) is not str or not task_id.isascii() or not task_id:
            checked = _check_id(tel, task_id)
            if checked is None:
                return
            task_id = checked
        if event_time is not None and (type(event_time) is not int or not _T_MIN <= event_time <= _T_MAX):
            event_time = _fix(tel, "event_time", event_time, validate.clean_time(event_time))
        name, wf, blk = self._ctx.pop(task_id, _NO_CTX)
        t = now_ns()
        tel.bus_put(
            TaskCompleted(
                event_id=_event_ids._prefix | next(_event_ids._counter),
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
            self.completed(
                task_id, end, cpu_time_s=outcome.cpu_time_s, peak_rss_bytes=outcome.peak_rss_bytes
            )
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


def _parent_span(tel: Telemetry, scope: Any) -> str | None:
    """The current span's id (hex) when a task made now hangs under it rather than its scope.

    Inside a running task (or a user span) the current span is not the scope's own: the
    new task hangs under it. One context lookup; no string unless it differs.
    """
    span_ctx = _get_current_span().get_span_context()
    if (
        span_ctx.is_valid
        and span_ctx.trace_id == tel.trace_id_int
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


def task(
    func: F | None = None, /, *, name: str | None = None, backend: str = "inline"
) -> F | Callable[[F], F]:
    """Record each call of a function (sync or async) as a task.

    The call is one task: created and started when called, completed when it returns,
    failed if it raises (the exception still propagates), canceled if an async call is
    canceled. While it runs, the task span is the current OTel span, so spans made
    inside are its children. Use as ``@otelflow.task`` or ``@otelflow.task(name="x")``.
    """

    if name is not None and (not isinstance(name, str) or not name):
        raise ConfigError(
            f"@otelflow.task(name=...) takes a non-empty string, not {name!r}; e.g. name={str(name)!r}."
        )

    def decorate(fn: F) -> F:
        task_name = name or fn.__qualname__
        trk = TaskTracker(backend=backend)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if trk._tel() is None:
                    return await fn(*args, **kwargs)
                tid = trk.created(None, task_name)
                token = _attach(trk, tid)
                trk.started(tid)
                try:
                    result = await fn(*args, **kwargs)
                except asyncio.CancelledError:
                    trk.canceled(tid, reason="cancelled")
                    raise
                except BaseException as exc:
                    trk.failed(tid, exc)
                    raise
                finally:
                    _detach(token)
                trk.completed(tid)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if trk._tel() is None:
                return fn(*args, **kwargs)
            tid = trk.created(None, task_name)
            token = _attach(trk, tid)
            trk.started(tid)
            cpu0 = _thread_time()  # CPU of this thread only: the task runs in it
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                trk.failed(tid, exc, cpu_time_s=round(_thread_time() - cpu0, 6))
                raise
            finally:
                _detach(token)
            trk.completed(tid, cpu_time_s=round(_thread_time() - cpu0, 6))
            return result

        return wrapper  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate


def _attach(trk: TaskTracker, task_id: str) -> tuple[object, object] | None:
    ctx = trk.span_context(task_id)
    if ctx is None:
        return None
    return (
        otel_context.attach(otel_trace.set_span_in_context(otel_trace.NonRecordingSpan(ctx))),
        enter_task(task_id),  # what the task logs names it
    )


def _detach(token: tuple[object, object] | None) -> None:
    if token is not None:
        exit_task(token[1])  # type: ignore[arg-type]
        try:
            otel_context.detach(token[0])  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - context already gone
            pass
