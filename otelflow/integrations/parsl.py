"""Record Parsl apps: the DataFlowKernel's own task states as otelflow lifecycle steps.

Use::

    with otelflow.start_telemetry():
        dfk = parsl.load(config)
        otelflow.instrument(dfk)                  # idempotent; otelflow.uninstrument(dfk)
        with otelflow.workflow_scope("sweep"):
            total = reduce_app(inputs=[simulate(i) for i in range(100)]).result()

:func:`instrument` changes one ``DataFlowKernel`` *object* (and its executors), never a
class. Every task state change passes ``DataFlowKernel._update_task_state``; that is where
the lifecycle comes from:

* ``pending`` (first) → ``TaskCreated`` in the caller's workflow/block scope, named after
  the app, depending on the AppFutures/DataFutures in its args, kwargs and ``inputs``;
* the launch (dependencies done) → ``TaskResolved``; handed to the executor → ``TaskSubmitted``;
* the app function runs wrapped in :class:`otelflow.toolkit.Measured` with a carrier: its
  worker-side start/end (and CPU, RSS in worker processes) ride home on the result or the
  exception — unwrapped before Parsl sees it — and spans made inside nest under the task,
  on ThreadPoolExecutor and in HighThroughputExecutor workers alike;
* ``exec_done`` → completed; ``failed`` → failed with the app's exception;
  ``dep_fail`` → failed as ``UpstreamFailed``; ``memo_done`` → completed with
  ``otelflow.task.from_cache`` and one more on the ``otelflow.parsl.cache_hits`` counter;
  ``fail_retryable`` → one attempt of the same task (``parsl.tries``,
  ``parsl.try.<n>.*`` attributes on its span).

``join_app`` bodies run inside their task's span, so the apps they call are its children.
It hooks private DataFlowKernel methods (``_update_task_state``, ``launch_task``,
``_complete_task_exception``): other Parsl versions than the tested one get a warning.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import Any

import msgspec
import parsl
from parsl.app.errors import RemoteExceptionWrapper
from parsl.dataflow.dflow import DataFlowKernel

import otelflow
from otelflow import toolkit

__all__ = ["instrument", "is_instrumented", "task_id_of", "uninstrument"]

_log = logging.getLogger("otelflow")

TESTED_VERSIONS = ("2026.10.26",)
"""Parsl versions this integration was tested with (it hooks DataFlowKernel internals)."""

_HOOKS = ("_update_task_state", "launch_task", "_complete_task_exception")
_ATTR = "_otelflow_instrumentation"
_MAX_TRIES_RECORDED = 8  # per-try span attributes kept for at most this many attempts
_warned: set[str] = set()


def _warn_once(key: str, msg: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        _log.warning(msg, *args)


def _type_name(exc: BaseException) -> str:
    tp = type(exc)
    mod = tp.__module__
    return tp.__qualname__ if mod in ("builtins", "__main__") else f"{mod}.{tp.__qualname__}"


class _Task:
    """What otelflow keeps about one Parsl task from creation to its final state."""

    __slots__ = ("error", "joining", "name", "outcome", "scope", "tid", "tries")

    def __init__(self, tid: str, name: str, scope: toolkit.ScopeRef | None) -> None:
        self.tid = tid
        self.name = name
        self.scope = scope
        self.outcome: toolkit.Outcome | None = None
        self.error: BaseException | None = None
        self.joining = False
        self.tries: list[tuple[toolkit.Outcome | None, BaseException | None]] = []


class _Instrumentation:
    """The hooks installed on one DataFlowKernel."""

    def __init__(self, dfk: DataFlowKernel, backend: str, telemetry: Any, worker_telemetry: bool) -> None:
        self.dfk = dfk
        self.telemetry = telemetry
        self.worker_telemetry = worker_telemetry
        self.trk = otelflow.tracker(backend=backend, telemetry=telemetry)
        # Parsl task ids restart at 0 in every DFK: prefix them with the DFK's run id.
        self.prefix = f"parsl-{str(dfk.run_id)[:8]}-"
        self.tasks: dict[int, _Task] = {}
        self.local = threading.local()
        self.orig_update = dfk._update_task_state
        self.orig_launch = dfk.launch_task
        self.orig_exception = dfk._complete_task_exception
        self.executors: dict[str, Any] = {}
        self.errors = 0
        self._carriers: dict[tuple[str, toolkit.ScopeRef | None], bytes] = {}
        self._counters: dict[str, Any] = {}
        self.log_capture: Any = None  # otelflow.capture_logging's handle, with capture_logs=True

    # -- DataFlowKernel hooks ----------------------------------------------------------------

    def update_task_state(self, task_record: Any, new_state: Any) -> None:
        first = "status" not in task_record
        self.orig_update(task_record, new_state)
        try:
            self._on_state(task_record, new_state.name, first)
        except Exception as exc:  # noqa: BLE001 - never break Parsl's bookkeeping
            self.errors += 1
            _warn_once("state", "otelflow could not record a Parsl task state change (%r); recording goes on.", exc)

    def complete_task_exception(self, task_record: Any, new_state: Any, exception: BaseException) -> None:
        t = self.tasks.get(task_record["id"])
        if t is not None:
            t.error = exception
        self.orig_exception(task_record, new_state, exception)

    def launch_task(self, task_record: Any) -> Future[Any]:
        t = self.tasks.get(task_record["id"])
        if t is not None:
            if task_record.get("depends"):
                self.trk.resolved(t.tid)  # the DFK found every dependency done
            self._patch_executor(task_record.get("executor"))
        self.local.task = t
        try:
            return self.orig_launch(task_record)
        finally:
            self.local.task = None

    # -- executor hook -----------------------------------------------------------------------

    def _patch_executor(self, label: str | None) -> None:
        if label is None or label in self.executors:
            return
        executor = self.dfk.executors.get(label)
        if executor is None:
            return
        orig = executor.submit
        self.executors[label] = executor

        def submit(func: Any, resource_specification: Any, *args: Any, **kwargs: Any) -> Any:
            return self.submit(orig, func, resource_specification, *args, **kwargs)

        vars(executor)["submit"] = submit

    def submit(self, orig: Any, func: Any, resource_specification: Any, *args: Any, **kwargs: Any) -> Any:
        t: _Task | None = getattr(self.local, "task", None)
        if t is None:
            return orig(func, resource_specification, *args, **kwargs)
        carrier = self._carrier(t.scope)
        if carrier is None:  # no telemetry now: run it as Parsl would
            return orig(func, resource_specification, *args, **kwargs)
        self.trk.submitted(t.tid)
        kwargs[_TASK_KW] = t.tid.encode() + b"\0" + carrier
        inner = orig(_app(func), resource_specification, *args, **kwargs)
        outer: Future[Any] = Future()
        ex_id = getattr(inner, "parsl_executor_task_id", None)
        if ex_id is not None:
            outer.parsl_executor_task_id = ex_id  # type: ignore[attr-defined]
        inner.add_done_callback(_Unwrap(self, t, outer))
        return outer

    def _carrier(self, scope: toolkit.ScopeRef | None) -> bytes | None:
        """The carrier for tasks submitted in ``scope``, msgpack-encoded: one per session and scope.

        The worker derives the task's span from the task id (``task_context``), so the
        carrier holds nothing task-specific and is built once, not per task. It travels as
        bytes: Parsl serializes arguments with dill, which takes ~0.6 ms for the struct
        and ~10 µs for its bytes.
        """
        tel = self.telemetry if self.telemetry is not None else otelflow.current_telemetry()
        if tel is None or not tel.active:
            return None
        key = (tel.run_id, scope)
        encoded = self._carriers.get(key)
        if encoded is None:
            with otelflow.adopt_scope(scope):
                carrier = toolkit.carrier(telemetry=tel, join=self.worker_telemetry)
            if carrier is None:
                return None
            encoded = msgspec.msgpack.encode(carrier)
            if len(self._carriers) >= 1024:
                self._carriers.clear()
            self._carriers[key] = encoded
        return encoded

    # -- task states -------------------------------------------------------------------------

    def _on_state(self, task_record: Any, state: str, first: bool) -> None:
        pid = task_record["id"]
        if state == "pending":
            if first:
                self._created(task_record)
            return
        t = self.tasks.get(pid)
        if t is None:
            return
        trk = self.trk
        if state == "fail_retryable":
            t.tries.append((t.outcome, t.error))
            t.outcome = t.error = None
        elif state == "joining":
            t.joining = True  # its body returned; it ends when the apps it joins end
        elif state == "exec_done":
            self.tasks.pop(pid, None)
            out = t.outcome
            trk.completed(
                t.tid,
                out.end_ns if out is not None and not t.joining else None,
                cpu_time_s=out.cpu_time_s if out is not None else None,
                peak_rss_bytes=out.peak_rss_bytes if out is not None else None,
                attributes=self._try_attributes(t),
            )
        elif state == "memo_done":
            self.tasks.pop(pid, None)
            attrs = self._try_attributes(t) or {}
            attrs["otelflow.task.from_cache"] = True
            trk.completed(t.tid, attributes=attrs)
            self._count_cache_hit(t.name)
        elif state == "dep_fail":
            self.tasks.pop(pid, None)
            err = t.error
            trk.failed(
                t.tid,
                "UpstreamFailed",
                message=f"an upstream task failed ({err})" if err is not None else "an upstream task failed",
                attributes={"parsl.error_type": _type_name(err)} if err is not None else None,
            )
        elif state == "failed":
            self.tasks.pop(pid, None)
            out, err = t.outcome, t.error
            end = out.end_ns if out is not None and not t.joining else None
            cpu = out.cpu_time_s if out is not None else None
            rss = out.peak_rss_bytes if out is not None else None
            try_attrs = self._try_attributes(t)
            if err is not None:
                trk.failed(t.tid, err, end, cpu_time_s=cpu, peak_rss_bytes=rss, attributes=try_attrs)
            elif out is not None and out.error_type is not None:
                trk.failed(
                    t.tid, out.error_type, end, message=out.error_message, stacktrace=out.stacktrace,
                    cpu_time_s=cpu, peak_rss_bytes=rss, attributes=try_attrs,
                )  # fmt: skip
            else:
                trk.failed(t.tid, "parsl.Failed", end, attributes=try_attrs)

    def _created(self, task_record: Any) -> None:
        pid = task_record["id"]
        tid = f"{self.prefix}{pid}"
        name = str(task_record.get("func_name") or "app")
        deps: list[str] = []
        for d in task_record.get("depends") or ():
            up = _upstream_id(d, self.dfk)
            if up is not None:
                deps.append(f"{self.prefix}{up}")
        attrs: dict[str, str | int | float | bool] = {
            "parsl.task_id": pid,
            "parsl.executor": str(task_record.get("executor")),
        }
        if task_record.get("join"):
            attrs["parsl.join_app"] = True
        # Inside a running join_app body the task span is current: the new task hangs under it.
        self.tasks[pid] = _Task(tid, name, otelflow.current_scope())
        self.trk.created(tid, name, depends_on=deps, attributes=attrs)

    def _try_attributes(self, t: _Task) -> dict[str, str | int | float | bool] | None:
        if not t.tries:
            return None
        attrs: dict[str, str | int | float | bool] = {"parsl.tries": len(t.tries) + 1}
        for n, (out, err) in enumerate(t.tries[:_MAX_TRIES_RECORDED]):
            key = f"parsl.try.{n}."
            if out is not None:
                attrs[key + "start_ns"] = out.start_ns
                attrs[key + "end_ns"] = out.end_ns
                attrs[key + "duration_s"] = round((out.end_ns - out.start_ns) / 1e9, 6)
                if out.worker:
                    attrs[key + "worker"] = out.worker
            if err is not None:
                attrs[key + "error_type"] = _type_name(err)
                attrs[key + "error_message"] = _message(err)[:200]
            elif out is not None and out.error_type:
                attrs[key + "error_type"] = out.error_type
                attrs[key + "error_message"] = (out.error_message or "")[:200]
        return attrs

    def _count_cache_hit(self, name: str) -> None:
        tel = self.telemetry if self.telemetry is not None else otelflow.current_telemetry()
        provider = getattr(tel, "meter_provider", None)
        if provider is None:
            return
        key = str(getattr(tel, "run_id", ""))  # not id(provider): ids are reused after a session ends
        counter = self._counters.get(key)
        if counter is None:
            counter = provider.get_meter("otelflow.parsl").create_counter(
                "otelflow.parsl.cache_hits", unit="{task}", description="Parsl apps answered from the memo table"
            )
            self._counters[key] = counter
        counter.add(1, {"otelflow.task.name": name})

    def record_worker_result(self, t: _Task, out: toolkit.Outcome | None, err: BaseException | None) -> None:
        t.outcome = out
        if err is not None:
            t.error = err
        if out is not None:
            self.trk.started(t.tid, out.start_ns, worker=out.worker, pid=out.pid)


_TASK_KW = "_otelflow_task"
"""Keyword argument carrying ``<task id>\\0<msgpack carrier>`` to :class:`_MeasuredApp`."""

_RESULT = "__otelflow_parsl_result__"
"""First item of the ``(tag, value, msgpack outcome)`` tuple a measured app returns."""

_carrier_decoder = msgspec.msgpack.Decoder(toolkit.Carrier)
_outcome_decoder = msgspec.msgpack.Decoder(toolkit.Outcome)
_carriers_seen: dict[bytes, toolkit.Carrier] = {}


def _decode_carrier(data: bytes) -> toolkit.Carrier | None:
    carrier = _carriers_seen.get(data)
    if carrier is None:
        try:
            carrier = _carrier_decoder.decode(data)
        except msgspec.DecodeError:
            return None
        if len(_carriers_seen) >= 256:
            _carriers_seen.clear()
        _carriers_seen[data] = carrier
    return carrier


class _MeasuredApp:
    """The function handed to the executor: runs the app as ``toolkit.Measured`` would.

    One per app function, with the task id and carrier in a keyword argument: Parsl caches
    the serialized function by identity (``DillCallableSerializer``'s lru_cache), so an
    object per task would have it dill the app by value for every task; and HTEX logs the
    function (this ``repr`` is the app's own) and the positional arguments, not the keywords.
    The outcome comes back msgpack-encoded in a plain tuple, which dill handles in ~40 µs
    (the :class:`~otelflow.toolkit.Returned` struct takes ~200 µs).
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (type(self), (self.fn,))

    def __repr__(self) -> str:
        return repr(self.fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task = kwargs.pop(_TASK_KW, None)
        if not isinstance(task, bytes):
            return self.fn(*args, **kwargs)
        tid, _, encoded = task.partition(b"\0")
        ret = toolkit.Measured(self.fn, tid.decode(), _decode_carrier(encoded))(*args, **kwargs)
        return (_RESULT, ret.value, msgspec.msgpack.encode(ret.outcome))


_CACHE_SIZE = 256  # wrappers kept (walltime apps make a new function per call)
_apps: dict[int, tuple[Any, _MeasuredApp]] = {}
_apps_lock = threading.Lock()


def _app(fn: Any) -> _MeasuredApp:
    """The (cached, by identity) :class:`_MeasuredApp` for ``fn``."""
    entry = _apps.get(id(fn))
    if entry is not None and entry[0] is fn:
        return entry[1]
    app = _MeasuredApp(fn)
    with _apps_lock:
        if len(_apps) >= _CACHE_SIZE:
            _apps.pop(next(iter(_apps)))
        _apps[id(fn)] = (fn, app)
    return app


class _Unwrap:
    """Done-callback of the executor's future: take the Outcome off, pass the rest on."""

    __slots__ = ("inst", "outer", "task")

    def __init__(self, inst: _Instrumentation, task: _Task, outer: Future[Any]) -> None:
        self.inst = inst
        self.task = task
        self.outer = outer

    def __call__(self, inner: Future[Any]) -> None:
        try:
            value = inner.result()
        except BaseException as exc:  # noqa: BLE001 - handed on to Parsl as it came
            self._record(toolkit.outcome_of(exc), exc)
            self.outer.set_exception(exc)
            return
        out: toolkit.Outcome | None = None
        if type(value) is tuple and len(value) == 3 and value[0] == _RESULT:
            _, value, encoded = value
            try:
                out = _outcome_decoder.decode(encoded)
            except msgspec.DecodeError:
                out = None
        # Parsl's wrap_error turns the app's exception into a returned RemoteExceptionWrapper.
        err = value.e_value if isinstance(value, RemoteExceptionWrapper) else None
        self._record(out, err)
        self.outer.set_result(value)

    def _record(self, out: toolkit.Outcome | None, err: BaseException | None) -> None:
        try:
            self.inst.record_worker_result(self.task, out, err)
        except Exception:  # noqa: BLE001 - the result must reach Parsl whatever happens here
            self.inst.errors += 1


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__
        return "<unprintable>"


def _upstream_id(dep: Any, dfk: DataFlowKernel) -> int | None:
    """The Parsl task id behind an AppFuture or DataFuture of ``dfk``, else None."""
    for _ in range(4):  # DataFuture.parent is the AppFuture (or a staging future)
        rec = getattr(dep, "task_record", None)
        if isinstance(rec, dict):
            return rec.get("id") if rec.get("dfk") is dfk else None
        dep = getattr(dep, "parent", None)
        if dep is None:
            return None
    return None


# --- public API ------------------------------------------------------------------------------


def instrument(
    dfk: DataFlowKernel,
    *,
    backend: str = "parsl",
    telemetry: Any = None,
    worker_telemetry: bool = True,
    capture_logs: bool = False,
) -> DataFlowKernel:
    """Record every app the DataFlowKernel ``dfk`` runs; returns ``dfk``.

    A second call on the same DFK does nothing (logged). Tasks are recorded while telemetry
    runs; without it, apps run exactly as before.

    Args:
        dfk: The kernel ``parsl.load()`` returned (or ``parsl.dfk()``).
        backend: Engine name on every task (a metric attribute).
        telemetry: Record on this telemetry instead of the process's current one.
        worker_telemetry: Let worker processes (HTEX) join the run, so spans and events made
            inside apps land in the run directory next to the task. False measures only.
        capture_logs: Also capture Parsl's own ``parsl.*`` log records (INFO and above) as
            wide log events with their ``parsl.task`` / ``parsl.task_state`` … extras, through
            ``otelflow.capture_logging("parsl")`` (one more handler: Parsl's log files stay
            as they are).

    Raises:
        TypeError: ``dfk`` is not a Parsl ``DataFlowKernel``.
    """
    if not isinstance(dfk, DataFlowKernel):
        raise TypeError(
            f"otelflow.integrations.parsl.instrument() takes a parsl DataFlowKernel (parsl.load(config)), "
            f"not {type(dfk).__name__}."
        )
    d = vars(dfk)
    if _ATTR in d:
        _log.warning("otelflow: %r is already instrumented; instrument() left it as it was.", dfk)
        return dfk
    missing = [h for h in _HOOKS if not callable(getattr(dfk, h, None))]
    if missing:
        _log.warning(
            "otelflow cannot record Parsl %s: its DataFlowKernel has no %s. Use Parsl %s or report "
            "this version; apps run unrecorded.",
            parsl.__version__, ", ".join(missing), " / ".join(TESTED_VERSIONS),
        )  # fmt: skip
        return dfk
    if parsl.__version__ not in TESTED_VERSIONS:
        _warn_once(
            f"version:{parsl.__version__}",
            "otelflow's Parsl integration was tested with Parsl %s, not %s; it hooks DataFlowKernel "
            "internals, so if tasks go missing from the run, pin parsl==%s.",
            " / ".join(TESTED_VERSIONS), parsl.__version__, TESTED_VERSIONS[-1],
        )  # fmt: skip
    inst = _Instrumentation(dfk, backend, telemetry, worker_telemetry)
    d[_ATTR] = inst
    d["_complete_task_exception"] = inst.complete_task_exception
    d["launch_task"] = inst.launch_task
    d["_update_task_state"] = inst.update_task_state
    for label in list(dfk.executors):
        inst._patch_executor(label)
    if capture_logs:
        _capture_parsl_logs(inst)
    return dfk


def uninstrument(dfk: DataFlowKernel) -> DataFlowKernel:
    """Undo :func:`instrument` on ``dfk``; returns it. Tasks in flight finish unrecorded."""
    d = getattr(dfk, "__dict__", {})
    inst: _Instrumentation | None = d.pop(_ATTR, None)
    if inst is None:
        _log.warning("otelflow: %r is not instrumented; uninstrument() did nothing.", dfk)
        return dfk
    for name in _HOOKS:
        d.pop(name, None)
    for executor in inst.executors.values():
        vars(executor).pop("submit", None)
    if inst.log_capture is not None:
        inst.log_capture.stop()
    return dfk


def is_instrumented(dfk: object) -> bool:
    """True if :func:`instrument` was applied to ``dfk`` (and not undone)."""
    return _ATTR in getattr(dfk, "__dict__", {})


def task_id_of(app_future: Any) -> str | None:
    """The otelflow task id of a Parsl AppFuture from an instrumented DFK, or None."""
    rec = getattr(app_future, "task_record", None)
    if not isinstance(rec, dict):
        return None
    inst = getattr(rec.get("dfk"), _ATTR, None)
    return f"{inst.prefix}{rec['id']}" if inst is not None else None


def _capture_parsl_logs(inst: _Instrumentation) -> None:
    """Capture the ``parsl`` loggers' records as wide log events (their ``parsl.*`` extras kept).

    ``otelflow.capture_logging`` adds one handler and never touches Parsl's own handlers,
    levels or files; :func:`uninstrument` stops it.
    """
    inst.log_capture = otelflow.capture_logging("parsl", level="INFO", telemetry=inst.telemetry)
