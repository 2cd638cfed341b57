"""Instrumented asyncio tasks: ``create_task`` and ``gather`` that record the task lifecycle.

Use::

    from otelflow.integrations import asyncio as oasyncio

    async def pipeline():
        with otelflow.workflow_scope("etl"):
            raw = oasyncio.create_task(load("a.csv"))
            clean = oasyncio.create_task(preprocess_after(raw), depends_on=[raw])
            scores = await oasyncio.gather(score(1), score(2))   # each coroutine one task
            return await clean

Each instrumented coroutine is one task: ``TaskCreated`` when ``create_task()`` is called,
in the caller's workflow/block scope (asyncio copies the ``contextvars`` context into the
task, so scopes follow it) → ``TaskResolved`` when the tasks in ``depends_on`` are done →
``TaskSubmitted`` (at creation without dependencies; otherwise when they are done) →
``TaskStarted`` when the coroutine first runs → ``TaskCompleted`` / ``TaskFailed`` /
``TaskCanceled``. While it runs the task span is the current OTel span.

``depends_on`` holds asyncio tasks or futures (instrumented ones become span links) and
task ids. The coroutine starts only once they are all done; if one failed, the task fails
with :class:`~otelflow.integrations.futures.UpstreamFailedError` without running (and
the coroutine is closed); if one was canceled, the task is canceled.

For ``async def`` functions, ``@otelflow.task`` records every call as a task too.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace

from otelflow import _global
from otelflow._task_context import enter_task, exit_task
from otelflow.integrations.futures import UpstreamFailedError, _short
from otelflow.tasks import TaskTracker, error_type_name

if TYPE_CHECKING:
    from otelflow.session import Telemetry

__all__ = ["create_task", "gather", "task_id_of"]

T = TypeVar("T")

_BACKEND = "asyncio"
_ids: weakref.WeakKeyDictionary[asyncio.Future[Any], str] = weakref.WeakKeyDictionary()
_trackers: dict[tuple[int, str], tuple[Telemetry, TaskTracker]] = {}
_trackers_lock = threading.Lock()


def task_id_of(task: asyncio.Future[Any]) -> str | None:
    """The otelflow task id of a task made by :func:`create_task`, or None."""
    return _ids.get(task)


def _tracker(telemetry: Telemetry | None, backend: str) -> TaskTracker | None:
    tel = telemetry or _global._current  # hot path: one attribute read
    if tel is None or not tel.active:
        return None
    key = (id(tel), backend)
    cached = _trackers.get(key)
    if cached is not None and cached[0] is tel:
        return cached[1]
    with _trackers_lock:
        # Keep only trackers of running sessions (a few, even over many runs).
        for k, (t, _) in list(_trackers.items()):
            if not t.active:
                del _trackers[k]
        trk = TaskTracker(backend=backend, telemetry=tel)
        _trackers[key] = (tel, trk)
    return trk


class _State:
    __slots__ = ("started", "terminal")

    def __init__(self) -> None:
        self.started = False
        self.terminal = False


def create_task(
    coro: Coroutine[Any, Any, T],
    *,
    name: str | None = None,
    depends_on: Iterable[asyncio.Future[Any] | str] = (),
    backend: str = _BACKEND,
    telemetry: Telemetry | None = None,
    context: Any = None,
) -> asyncio.Task[T]:
    """Like ``asyncio.create_task``, recording the coroutine as one task.

    Call it inside a running event loop. Without running telemetry it still waits for
    ``depends_on`` and otherwise behaves like ``asyncio.create_task``.

    Args:
        coro: The coroutine to run.
        name: The task name (a metric attribute; also the asyncio task's name).
            Default: the coroutine function's qualified name.
        depends_on: Tasks or futures to wait for before starting, and task ids (str) to
            record as dependencies.
        backend: Engine name recorded on the task.
        telemetry: Record on this telemetry instead of the current one.
        context: A ``contextvars.Context`` to run in (as for ``asyncio.create_task``).

    Returns:
        The ``asyncio.Task``; awaiting it gives the coroutine's result.

    Raises:
        TypeError: ``coro`` is not a coroutine, or ``depends_on`` holds something else.
        RuntimeError: No event loop is running in this thread.
    """
    if not asyncio.iscoroutine(coro):
        raise TypeError(f"create_task() takes a coroutine, not {type(coro).__name__}.")
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        coro.close()  # no "never awaited" warning on top of the error
        raise
    deps: list[asyncio.Future[Any]] = []
    dep_ids: list[str] = []
    for d in depends_on:
        if isinstance(d, str):
            dep_ids.append(d)
        elif asyncio.isfuture(d):
            deps.append(d)
            did = _ids.get(d)
            if did is not None and did not in dep_ids:
                dep_ids.append(did)
        else:
            coro.close()
            raise TypeError(f"depends_on takes asyncio tasks/futures and task ids (str), not {type(d).__name__}.")
    task_name = name or getattr(coro, "__qualname__", None) or "coroutine"
    trk = _tracker(telemetry, backend)
    tid = None
    if trk is not None:
        tid = trk.created(None, task_name, depends_on=dep_ids)
        if not deps:
            trk.submitted(tid)
    state = _State()
    wrapper = _run(coro, trk, tid, deps, state, task_name)
    if context is None:
        task = loop.create_task(wrapper, name=name)
    else:
        task = loop.create_task(wrapper, name=name, context=context)
    if tid is not None:
        _ids[task] = tid
    task.add_done_callback(lambda t: _finished(t, coro, trk, tid, state))
    return task


async def _run(
    coro: Coroutine[Any, Any, T],
    trk: TaskTracker | None,
    tid: str | None,
    deps: list[asyncio.Future[Any]],
    state: _State,
    task_name: str,
) -> T:
    if deps:
        pending = [d for d in deps if not d.done()]
        if pending:
            await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
        for d in deps:
            if not d.done():  # FIRST_EXCEPTION returned early: another one failed
                continue
            up = _ids.get(d)
            label = f"upstream task {up}" if up else "an upstream future"
            if d.cancelled():
                if trk is not None:
                    state.terminal = True
                    trk.canceled(tid, reason=f"{label} was canceled")  # type: ignore[arg-type]
                raise asyncio.CancelledError(f"{label} was canceled")
            exc = d.exception()
            if exc is not None:
                err = UpstreamFailedError(
                    f"{task_name} did not run: {label} failed with {error_type_name(exc)}: {_short(exc)}", up
                )
                if trk is not None:
                    state.terminal = True
                    trk.failed(tid, err)  # type: ignore[arg-type]
                raise err from exc
        if trk is not None:
            trk.submitted(tid)  # type: ignore[arg-type]
    state.started = True
    token = None
    if trk is not None:
        trk.started(tid, worker=f"asyncio:{threading.current_thread().name}")  # type: ignore[arg-type]
        span_ctx = trk.span_context(tid)  # type: ignore[arg-type]
        if span_ctx is not None:
            token = otel_context.attach(otel_trace.set_span_in_context(otel_trace.NonRecordingSpan(span_ctx)))
    task_token = enter_task(tid) if trk is not None else None
    try:
        result = await coro
    except asyncio.CancelledError:
        if trk is not None:
            state.terminal = True
            trk.canceled(tid, reason="cancelled")  # type: ignore[arg-type]
        raise
    except BaseException as exc:
        if trk is not None:
            state.terminal = True
            trk.failed(tid, exc)  # type: ignore[arg-type]
        raise
    finally:
        exit_task(task_token)
        if token is not None:
            try:
                otel_context.detach(token)
            except Exception:  # noqa: BLE001 - the context was switched elsewhere
                pass
    if trk is not None:
        state.terminal = True
        trk.completed(tid)  # type: ignore[arg-type]
    return result


def _finished(
    task: asyncio.Task[Any],
    coro: Coroutine[Any, Any, Any],
    trk: TaskTracker | None,
    tid: str | None,
    state: _State,
) -> None:
    # The steps the wrapper could not record: the task ended before its coroutine ran
    # (canceled while waiting, or an upstream failed).
    if not state.started:
        coro.close()  # never awaited: no "coroutine was never awaited" warning
    if trk is None or state.terminal:
        return
    state.terminal = True
    if task.cancelled():
        trk.canceled(tid, reason="canceled before it started")  # type: ignore[arg-type]
        return
    exc = task.exception()
    if exc is not None:
        trk.failed(tid, exc)  # type: ignore[arg-type]


def gather(
    *aws: Awaitable[Any],
    return_exceptions: bool = False,
    backend: str = _BACKEND,
    telemetry: Telemetry | None = None,
) -> asyncio.Future[list[Any]]:
    """Like ``asyncio.gather``; each bare coroutine becomes an instrumented task.

    Call it inside a running event loop. Tasks and futures are awaited as they are (make
    them with :func:`create_task` to record them). Results come back in argument order;
    canceling the returned future cancels the tasks, as with ``asyncio.gather``.
    """
    items = [create_task(a, backend=backend, telemetry=telemetry) if asyncio.iscoroutine(a) else a for a in aws]
    return asyncio.gather(*items, return_exceptions=return_exceptions)
