"""Instrument ``concurrent.futures`` executors: thread pools, process pools, any ``Executor``.

Use::

    with otelflow.start_telemetry():
        with otelflow.instrument(ProcessPoolExecutor(4)) as pool:
            with otelflow.workflow_scope("pipeline"):
                raw = pool.submit(load, "a.csv")
                clean = pool.submit(preprocess, raw)              # a future argument: a dependency
                model = pool.submit(train, clean, depends_on=[other])
                print(model.result())

:func:`instrument` changes one executor *object* (not its class, not other executors):
``submit``, ``map`` and ``shutdown`` become instance attributes that wrap the originals.
:func:`uninstrument` removes them again; instrumenting twice is a no-op.

Each ``submit()`` (and each item of ``map()``) is one task:
``TaskCreated`` at the call, in the caller's workflow/block scope → ``TaskResolved`` when
its last upstream future is done (derived by the dispatcher) → ``TaskSubmitted`` when it
is handed to the executor → ``TaskStarted`` and ``TaskCompleted`` / ``TaskFailed`` /
``TaskCanceled`` measured where it runs (see :mod:`otelflow.integrations._worker`).

Futures from instrumented executors passed as arguments (positional, keyword, and inside a
list, tuple or dict one level deep) and any futures in ``depends_on=[...]`` are
dependencies: the task is handed to the executor only when they are all done, future
arguments replaced by their results. Other futures passed as arguments (e.g. a plain
``Future()`` the task is meant to complete) are passed through unchanged. The
caller gets a future at once. If an upstream future failed, the task does not run: its
future raises :class:`UpstreamFailedError` (caused by the upstream error); if an upstream
was canceled, the task is canceled too.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from otelflow import _global
from otelflow.errors import OtelflowError
from otelflow.integrations._worker import LocalCall
from otelflow.scope import current_scope
from otelflow.tasks import TaskTracker, error_type_name
from otelflow.toolkit import OUTCOME_ATTR, Carrier, Measured, carrier

if TYPE_CHECKING:
    from otelflow.session import Telemetry

__all__ = ["UpstreamFailedError", "instrument", "is_instrumented", "task_id_of", "uninstrument"]

_log = logging.getLogger("otelflow")

E = TypeVar("E", bound=Executor)

_ATTR = "_otelflow_instrumentation"
_TID = "_otelflow_task_id"
_PATCHED = ("submit", "map", "shutdown")
# Marks the futures an instrumented executor gave out: only those, as arguments, are
# dependencies (any other future is passed through: the task may be the one to set it).
_OWN = "_otelflow_future"


class UpstreamFailedError(OtelflowError):
    """A task did not run because a future it depends on failed.

    The upstream exception is the ``__cause__``.

    Attributes:
        upstream_task_id: The failed upstream's task id, if it was recorded.
    """

    def __init__(self, message: str, upstream_task_id: str | None = None) -> None:
        super().__init__(message)
        self.upstream_task_id = upstream_task_id

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (type(self), (str(self), self.upstream_task_id))


# --- public API ------------------------------------------------------------------------------


def instrument(
    executor: E,
    *,
    backend: str | None = None,
    telemetry: Telemetry | None = None,
    worker_telemetry: bool = True,
) -> E:
    """Record every task submitted to ``executor``; returns the same executor.

    Safe to call at any time and from any thread; a second call on the same executor does
    nothing (and logs a warning). Tasks are recorded only while telemetry runs; without
    it, the executor still resolves future arguments and ``depends_on`` the same way.

    Args:
        executor: A ``ThreadPoolExecutor``, ``ProcessPoolExecutor`` or any other
            ``concurrent.futures.Executor`` (thread pools run the task wrapper in-process;
            everything else gets the picklable wrapper).
        backend: Engine name on every task (a metric attribute); default ``threads``,
            ``processes`` or the executor's class name.
        telemetry: Record on this telemetry instead of the process's current one.
        worker_telemetry: In worker processes, start a worker session so that spans and
            events made inside tasks reach the run directory (one file per worker, flushed
            after each task). False measures tasks only, which is cheaper.

    ``otelflow.instrument()`` (:mod:`otelflow.integrations.dispatch`) hands Dask clients,
    AsyncFlow engines and Parsl kernels to their own integrations and executors to this one.

    Raises:
        TypeError: ``executor`` is not a ``concurrent.futures.Executor``.
    """
    if not isinstance(executor, Executor):
        raise TypeError(
            f"otelflow.instrument() takes a concurrent.futures.Executor, not {type(executor).__name__}; "
            "for asyncio use otelflow.integrations.asyncio."
        )
    d = vars(executor)  # Executor has no __slots__: every executor has a __dict__
    if _ATTR in d:
        _log.warning("otelflow: %r is already instrumented; instrument() left it as it was.", executor)
        return executor
    inst = _Instrumentation(executor, backend, telemetry, worker_telemetry)
    d[_ATTR] = inst
    d["submit"] = inst.submit
    d["map"] = inst.map
    d["shutdown"] = inst.shutdown
    return executor


def uninstrument(executor: E) -> E:
    """Undo :func:`instrument` on ``executor``; returns it.

    Tasks already submitted are still recorded, and ones still waiting for upstream
    futures are still handed to the executor. Uninstrumenting an executor that is not
    instrumented logs a warning and does nothing.
    """
    d = getattr(executor, "__dict__", None)
    if d is None or _ATTR not in d:
        _log.warning("otelflow: %r is not instrumented; uninstrument() did nothing.", executor)
        return executor
    for name in (*_PATCHED, _ATTR):
        d.pop(name, None)
    return executor


def is_instrumented(executor: Executor) -> bool:
    """True if :func:`instrument` was applied to ``executor`` (and not undone)."""
    return _ATTR in getattr(executor, "__dict__", {})


def task_id_of(future: Future[Any]) -> str | None:
    """The otelflow task id of a future returned by an instrumented executor, or None."""
    return getattr(future, _TID, None)


# --- the proxy future for deferred and process-pool tasks -------------------------------------


class _ChainedFuture(Future):  # type: ignore[type-arg]
    """The future the caller gets when the executor's own future cannot be handed out.

    Until the task is handed to the executor, ``cancel()`` cancels it here; afterwards it is
    forwarded to the executor's future, whose outcome is copied into this one.
    """

    _otelflow_future = True  # _OWN

    def __init__(self) -> None:
        super().__init__()
        self._inner: Future[Any] | None = None
        self._link = threading.RLock()
        self._claimed = False

    def cancel(self) -> bool:
        with self._link:
            inner = self._inner
            if inner is None:
                if self._claimed:  # being settled here: like a running future
                    return False
                if not Future.cancel(self):
                    return False
                self.set_running_or_notify_cancel()  # wakes wait() / as_completed()
                return True
        return inner.cancel()

    def running(self) -> bool:
        inner = self._inner
        return inner.running() if inner is not None else False

    def _attach(self, submit: Callable[[], Future[Any]]) -> Future[Any] | None:
        """Hand the task over via ``submit()`` unless it was canceled; None if it was."""
        with self._link:
            if self.done():
                return None
            inner = submit()
            self._inner = inner
            return inner

    def _claim(self) -> bool:
        """Take the right to settle this future before it is handed over.

        False if the caller canceled it first (or it is settled already); once claimed,
        ``cancel()`` returns False, so the outcome set next is the one the caller sees.
        """
        with self._link:
            if self._claimed or self.done():
                return False
            self._claimed = True
            return True

    def _cancel_here(self) -> None:
        with self._link:
            if self.done():
                return
            Future.cancel(self)
            self.set_running_or_notify_cancel()


def _copy_outcome(proxy: _ChainedFuture, inner: Future[Any]) -> None:
    if inner.cancelled():
        proxy._cancel_here()
        return
    exc = inner.exception()
    if exc is not None:
        proxy.set_exception(exc)
    else:
        proxy.set_result(inner.result())


# --- argument scanning -------------------------------------------------------------------------


def _is_own(x: Any) -> bool:
    """A future an instrumented executor gave out (an implicit dependency as an argument)."""
    return isinstance(x, Future) and getattr(x, _OWN, False) is True


def _scan(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Future[Any]] | None:
    """Instrumented executors' futures among the arguments (one level into lists, tuples
    and dicts), in order; other futures are plain arguments."""
    found: list[Future[Any]] | None = None
    for a in (*args, *kwargs.values()) if kwargs else args:
        if _is_own(a):
            if found is None:
                found = []
            found.append(a)
            continue
        t = type(a)
        if t is list or t is tuple:
            items: Iterable[Any] = a
        elif t is dict:
            items = a.values()
        else:
            continue
        for x in items:
            if _is_own(x):
                if found is None:
                    found = []
                found.append(x)
    return found


def _res(x: Any) -> Any:
    return x.result() if _is_own(x) else x


def _resolve(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Replace instrumented executors' futures (one level deep) by their results; they are
    all done."""

    def one(a: Any) -> Any:
        if _is_own(a):
            return a.result()
        t = type(a)
        if t is list:
            return [_res(x) for x in a]
        if t is tuple:
            return tuple(_res(x) for x in a)
        if t is dict:
            return {k: _res(v) for k, v in a.items()}
        return a

    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


def _task_name(fn: Any) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _unique(futures: list[Future[Any]]) -> list[Future[Any]]:
    seen: set[int] = set()
    out = []
    for f in futures:
        if id(f) not in seen:
            seen.add(id(f))
            out.append(f)
    return out


def _forget(task: _Task) -> None:
    """Drop what a settled task no longer needs (its callbacks outlive it)."""
    task.args = task.kwargs = task.fn = task.ctx = None
    task.ups = ()


def _first_problem(ups: list[Future[Any]]) -> Future[Any] | None:
    """The first done upstream that was canceled or failed, if any."""
    for f in ups:
        if f.done() and (f.cancelled() or f.exception() is not None):
            return f
    return None


# --- one task ------------------------------------------------------------------------------


_NO_WAIT = threading.Lock()  # the lock of tasks that never wait: never taken


class _Task:
    """A submitted task: what the instrumentation needs until it is handed over."""

    __slots__ = (
        "args",
        "cfg",
        "ctx",
        "fn",
        "kwargs",
        "lock",
        "proxy",
        "remaining",
        "settled",
        "tid",
        "trk",
        "ups",
    )

    def __init__(self) -> None:
        self.settled = False
        self.proxy: _ChainedFuture | None = None
        self.ctx: contextvars.Context | None = None
        self.cfg: Carrier | None = None
        self.trk: TaskTracker | None = None
        self.tid: str | None = None
        # What is handed over, cleared (None) once it is: see _forget() and _hand_over().
        self.fn: Callable[..., Any] | None = None
        self.args: tuple[Any, ...] | None = None
        self.kwargs: dict[str, Any] | None = None
        self.ups: tuple[Future[Any], ...] | list[Future[Any]] = ()
        self.remaining = 0  # upstream futures not done yet
        self.lock = _NO_WAIT  # replaced by a lock of its own if it waits for upstream futures


# --- the instrumentation of one executor --------------------------------------------------------


class _Instrumentation:
    """Wraps one executor's ``submit``, ``map`` and ``shutdown``."""

    def __init__(
        self, executor: Executor, backend: str | None, telemetry: Telemetry | None, worker_telemetry: bool
    ) -> None:
        self.local = isinstance(executor, ThreadPoolExecutor)
        if backend is None:
            if self.local:
                backend = "threads"
            elif isinstance(executor, ProcessPoolExecutor):
                backend = "processes"
            else:
                backend = type(executor).__name__
        self.backend = backend
        # The methods in place now (the class's, or another wrapper's): called underneath.
        self._submit: Callable[..., Future[Any]] = executor.submit
        self._shutdown: Callable[..., None] = executor.shutdown
        self._telemetry = telemetry
        self._worker_telemetry = worker_telemetry
        self._trackers: tuple[Any, TaskTracker, Carrier | None] | None = None
        # One carrier per scope tasks are submitted in (few), not one per task.
        self._carriers: dict[Any, Carrier] = {}
        # Tasks waiting for upstream futures, so shutdown(wait=True) can wait for them.
        self._held: set[_Task] = set()
        self._held_cv = threading.Condition(threading.Lock())
        self._launch_q: queue.SimpleQueue[_Task] | None = None
        self._launcher: threading.Thread | None = None

    # -- telemetry ------------------------------------------------------------------------

    def _tracker(self) -> tuple[TaskTracker, Carrier | None] | None:
        """The tracker (and worker config) for the running telemetry; None when none runs."""
        tel = self._telemetry or _global._current  # hot path: one attribute read
        if tel is None or not tel.active:
            return None
        cached = self._trackers
        if cached is not None and cached[0] is tel:
            return cached[1], cached[2]
        trk = TaskTracker(backend=self.backend, telemetry=tel)
        # The session's carrier without a scope: tasks derive their span from their id.
        cfg = None if self.local else carrier(telemetry=tel, join=self._worker_telemetry)
        if cfg is not None:
            cfg = msgspec.structs.replace(cfg, traceparent=None, scope=None)
        self._carriers.clear()
        self._trackers = (tel, trk, cfg)
        return trk, cfg

    def _carrier(self, base: Carrier | None) -> Carrier | None:
        """``base`` with the current scope (cached per scope)."""
        ref = current_scope()
        if base is None or ref is None:
            return base
        got = self._carriers.get(ref)
        if got is None:
            if len(self._carriers) >= 256:  # bounded however many scopes a long run enters
                self._carriers.clear()
            got = self._carriers[ref] = msgspec.structs.replace(base, scope=ref)
        return got

    # -- submit ---------------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """``Executor.submit`` that records the task; ``depends_on=[...]`` is consumed here."""
        depends_on = kwargs.pop("depends_on", None)
        ups = _scan(args, kwargs)
        extra_ids: list[str] = []
        if depends_on is not None:
            if isinstance(depends_on, (Future, str)):
                depends_on = [depends_on]
            for d in depends_on:
                if isinstance(d, Future):
                    ups = [d] if ups is None else [*ups, d]
                elif isinstance(d, str):
                    extra_ids.append(d)
                else:
                    raise TypeError(f"depends_on takes futures and task ids (str), not {type(d).__name__}.")
        if ups is not None and len(ups) > 1:
            ups = _unique(ups)
        rec = self._tracker()
        if rec is None and ups is None:
            fut = self._submit(fn, *args, **kwargs)  # nothing to record, nothing to wait for
            setattr(fut, _OWN, True)
            return fut

        task = _Task()
        task.fn = fn
        task.args = args
        task.kwargs = kwargs
        task.ups = ups or ()
        if rec is not None:
            trk = task.trk = rec[0]
            dep_ids = [i for i in (getattr(f, _TID, None) for f in task.ups) if i is not None]
            if extra_ids:
                dep_ids += [i for i in extra_ids if i not in dep_ids]
            task.tid = trk.created(None, _task_name(fn), depends_on=dep_ids)
            if self.local:
                task.ctx = contextvars.copy_context()
            else:
                task.cfg = self._carrier(rec[1])

        pending = [f for f in task.ups if not f.done()]
        if not pending:
            problem = _first_problem(task.ups) if task.ups else None
            if problem is None:
                return self._hand_over(task)  # type: ignore[return-value]
            proxy = task.proxy = self._new_proxy(task)
            self._upstream_problem(task, problem)
            return proxy

        # Wait for the upstream futures; the caller gets a future now.
        proxy = task.proxy = self._new_proxy(task)
        task.remaining = len(pending)
        task.lock = threading.Lock()
        with self._held_cv:
            self._held.add(task)
        proxy.add_done_callback(functools.partial(self._proxy_done, task))
        for f in pending:
            f.add_done_callback(functools.partial(self._upstream_done, task))
        return proxy

    def _new_proxy(self, task: _Task) -> _ChainedFuture:
        proxy = _ChainedFuture()
        if task.tid is not None:
            setattr(proxy, _TID, task.tid)
        return proxy

    def _upstream_done(self, task: _Task, f: Future[Any]) -> None:
        # Runs on whichever thread finished the upstream future.
        with task.lock:
            if task.settled:
                return
            bad = f.cancelled() or f.exception() is not None
            if not bad:
                task.remaining -= 1
                if task.remaining:
                    return
            task.settled = True
        if bad or self.local:
            try:
                if bad:
                    self._upstream_problem(task, f)
                else:
                    self._hand_over(task)
            finally:
                self._release(task)
        else:
            # Not on the process pool's own thread: its submit() from there can block on
            # the wake-up pipe that only that thread drains.
            self._launch_later(task)

    def _proxy_done(self, task: _Task, proxy: Future[Any]) -> None:
        # The caller canceled the future while it waited for its upstream futures.
        if not proxy.cancelled():
            return
        with task.lock:
            if task.settled:
                return  # whoever settled it records what landed
            task.settled = True
        try:
            _forget(task)
            if task.trk is not None:
                task.trk.canceled(task.tid, reason=_CANCELED_WAITING)  # type: ignore[arg-type]
        finally:
            self._release(task)

    def _release(self, task: _Task) -> None:
        with self._held_cv:
            self._held.discard(task)
            if not self._held:
                self._held_cv.notify_all()

    def _upstream_problem(self, task: _Task, up: Future[Any]) -> None:
        proxy = task.proxy
        assert proxy is not None
        up_id = getattr(up, _TID, None)
        label = f"upstream task {up_id}" if up_id else "an upstream future"
        if up.cancelled():
            _forget(task)
            claimed = proxy._claim()  # False: the caller canceled it first
            if task.trk is not None:
                reason = f"{label} was canceled" if claimed else _CANCELED_WAITING
                task.trk.canceled(task.tid, reason=reason)  # type: ignore[arg-type]
            proxy._cancel_here()
            return
        cause = up.exception()
        assert cause is not None
        err = UpstreamFailedError(
            f"{_task_name(task.fn)} did not run: {label} failed with {error_type_name(cause)}: {_short(cause)}",
            up_id,
        )
        err.__cause__ = cause
        _forget(task)
        if not proxy._claim():  # the caller canceled it first: that is its outcome
            if task.trk is not None:
                task.trk.canceled(task.tid, reason=_CANCELED_WAITING)  # type: ignore[arg-type]
            return
        if task.trk is not None:
            task.trk.failed(task.tid, err)  # type: ignore[arg-type]
        proxy.set_exception(err)

    # -- handing over to the executor ----------------------------------------------------------

    def _hand_over(self, task: _Task) -> Future[Any] | None:
        """Submit ``task`` to the executor.

        Without a proxy (nothing to wait for) this is the caller's ``submit()``: it returns
        the future to give out, or raises what the executor raised. With a proxy it settles
        the proxy and returns None.
        """
        fn, ups, ctx = task.fn, task.ups, task.ctx
        args = task.args if task.args is not None else ()
        kwargs = task.kwargs if task.kwargs is not None else {}
        if fn is None:  # pragma: no cover - handed over already (settled exactly once)
            return None
        # A future the caller keeps (directly or through its callbacks) must not keep its
        # upstream futures and their results alive.
        task.args = task.kwargs = task.fn = task.ctx = None
        task.ups = ()
        proxy = task.proxy
        if ups:
            try:
                args, kwargs = _resolve(args, kwargs)
            except BaseException as exc:  # noqa: BLE001 - an upstream lost its result meanwhile
                self._submit_failed(task, exc)
                return None
        trk = task.trk
        tid: str = task.tid  # type: ignore[assignment]
        if trk is None:
            call: Callable[..., Any] = fn
        elif self.local:
            call = LocalCall(fn, tid, trk, ctx)  # type: ignore[arg-type]
        else:
            call = Measured(fn, tid, task.cfg)
        if trk is not None:
            trk.submitted(tid)

        if proxy is None:
            try:
                inner = self._submit(call, *args, **kwargs)
            except BaseException as exc:
                if trk is not None:
                    trk.failed(tid, exc)
                raise
            setattr(inner, _OWN, True)
            if trk is None:
                return inner
            if self.local:
                # Thread pools give out the executor's own future.
                setattr(inner, _TID, tid)
                inner.add_done_callback(functools.partial(_record_cancel, trk, tid))
                return inner
            proxy = task.proxy = self._new_proxy(task)
            proxy._inner = inner
            inner.add_done_callback(functools.partial(_remote_done, proxy, trk, tid))
            return proxy

        try:
            attached = proxy._attach(lambda: self._submit(call, *args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - e.g. the executor was shut down meanwhile
            self._submit_failed(task, exc)
            return None
        if attached is None:  # the caller canceled it just before
            if trk is not None:
                trk.canceled(tid, reason=_CANCELED_WAITING)
            return None
        if trk is None or self.local:
            if trk is not None:
                attached.add_done_callback(functools.partial(_record_cancel, trk, tid))
            attached.add_done_callback(functools.partial(_copy_outcome, proxy))
        else:
            attached.add_done_callback(functools.partial(_remote_done, proxy, trk, tid))
        return None

    def _submit_failed(self, task: _Task, exc: BaseException) -> None:
        proxy = task.proxy
        if proxy is None:
            if task.trk is not None:
                task.trk.failed(task.tid, exc)  # type: ignore[arg-type]
            raise exc
        if not proxy._claim():
            if task.trk is not None and proxy.cancelled():
                task.trk.canceled(task.tid, reason=_CANCELED_WAITING)  # type: ignore[arg-type]
            return
        if task.trk is not None:
            task.trk.failed(task.tid, exc)  # type: ignore[arg-type]
        proxy.set_exception(exc)

    def _launch_later(self, task: _Task) -> None:
        with self._held_cv:
            q = self._launch_q
            if q is None or self._launcher is None:
                q = self._launch_q = queue.SimpleQueue()
                self._launcher = threading.Thread(
                    target=self._launch_loop, args=(q,), name="otelflow-futures-launcher", daemon=True
                )
                self._launcher.start()
            q.put(task)

    def _launch_loop(self, q: queue.SimpleQueue[_Task]) -> None:
        while True:
            try:
                task = q.get(timeout=1.0)
            except queue.Empty:
                with self._held_cv:
                    if q.empty():  # idle: end; the next deferred task starts a new launcher
                        if self._launch_q is q:
                            self._launch_q = None
                            self._launcher = None
                        return
                continue
            try:
                self._hand_over(task)
            except BaseException as exc:  # noqa: BLE001 - the launcher must not die
                _log.warning("otelflow could not hand a task to the executor: %s", exc)
            finally:
                self._release(task)

    # -- map and shutdown -------------------------------------------------------------------------

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """``Executor.map`` with one recorded task per item (``chunksize`` is not used)."""
        end_time = None if timeout is None else timeout + time.monotonic()
        fs = [self.submit(fn, *args) for args in zip(*iterables, strict=False)]

        def result_iterator() -> Iterator[Any]:
            try:
                fs.reverse()
                while fs:
                    if end_time is None:
                        yield _result_or_cancel(fs.pop())
                    else:
                        yield _result_or_cancel(fs.pop(), end_time - time.monotonic())
            finally:
                for f in fs:
                    f.cancel()

        return result_iterator()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """``Executor.shutdown``; with ``wait``, first hands over tasks still waiting on upstreams."""
        if cancel_futures:
            with self._held_cv:
                held = list(self._held)
            for task in held:
                if task.proxy is not None:
                    task.proxy.cancel()
        if wait:
            self._wait_held()
        self._shutdown(wait=wait, cancel_futures=cancel_futures)

    def _wait_held(self) -> None:
        """Wait until no task waits for its upstream futures any more.

        A task leaves ``_held`` once it was handed over (or failed or was canceled). One
        whose future is done has nothing left to hand over: if it is still held a while
        later, it is dropped rather than waited for forever.
        """
        settled_since: dict[_Task, float] = {}
        with self._held_cv:
            while self._held:
                self._held_cv.wait(0.1)
                now = time.monotonic()
                for task in list(self._held):
                    proxy = task.proxy
                    if proxy is None or not proxy.done():
                        settled_since.pop(task, None)
                    elif now - settled_since.setdefault(task, now) > _SETTLED_GRACE_S:
                        _log.debug("otelflow: shutdown stopped waiting for settled task %s", task.tid)
                        self._held.discard(task)


_CANCELED_WAITING = "canceled while waiting for upstream tasks"
# How long shutdown(wait=True) waits for a task whose future is done to leave _held.
_SETTLED_GRACE_S = 1.0


def _result_or_cancel(fut: Future[Any], timeout: float | None = None) -> Any:
    try:
        try:
            return fut.result(timeout)
        finally:
            fut.cancel()
    finally:
        del fut


def _short(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__
        return "<unprintable>"
    return text if len(text) <= 200 else text[:197] + "..."


def _record_cancel(trk: TaskTracker, tid: str, inner: Future[Any]) -> None:
    if inner.cancelled():
        trk.canceled(tid, reason="canceled before it started")


def _remote_done(proxy: _ChainedFuture, trk: TaskTracker, tid: str, inner: Future[Any]) -> None:
    """Record a process-pool task's outcome with its worker-side times, then settle ``proxy``.

    Runs on the executor's result thread; the terminal step is recorded before the caller's
    future is done, so a downstream task is never resolved before its upstream completed.
    """
    if inner.cancelled():
        trk.canceled(tid, reason="canceled before it started")
        proxy._cancel_here()
        return
    exc = inner.exception()
    if exc is None:
        returned = inner.result()
        trk.record_outcome(tid, returned.outcome)
        proxy.set_result(returned.value)
        return
    outcome = getattr(exc, OUTCOME_ATTR, None)
    if outcome is not None:
        try:
            delattr(exc, OUTCOME_ATTR)
        except AttributeError:
            pass
        trk.record_outcome(tid, outcome)
    else:
        # Lost on the way (a killed worker: BrokenProcessPool; an unpicklable result):
        # the submitting side's time is the best there is.
        trk.failed(tid, exc)
    proxy.set_exception(exc)
