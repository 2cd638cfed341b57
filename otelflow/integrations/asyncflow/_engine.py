"""Record an AsyncFlow ``WorkflowEngine``: its tasks, blocks and workflow scopes.

Where each step comes from (radical-asyncflow 0.6, rhapsody-py 0.6):

* TaskCreated — ``WorkflowEngine._register_component`` (private: AsyncFlow has no public
  registration hook), with the task's name, dependencies and the caller's scope.
* TaskResolved — derived by otelflow from the dependencies: the latest end of the upstream
  tasks, once all completed (never, if one failed or was canceled).
* TaskSubmitted — the backend's ``submit_tasks`` (public), when AsyncFlow hands it over.
* TaskQueued — the backend's RUNNING callback: handed to the executor, not yet running.
* TaskStarted and the terminal event — measured in the worker: the task function is
  wrapped (it stays ``async def``) and its times ride back on the return value or the
  exception; the backend callback (public, one per backend: ours calls the engine's)
  unwraps them before AsyncFlow sees the result.
* Failed by an upstream (``DependencyFailureError``) and canceled while pending —
  AsyncFlow settles those futures without any callback: the task future's done-callback.
* Workflows — ``flow.workflow_scope`` (public) also enters an otelflow workflow scope.
* Blocks — ``flow.execute_block`` (public) runs the block body inside an otelflow block,
  in the scope captured when the block was called (AsyncFlow runs blocks in its own loop
  task, which does not carry the caller's context).
"""

from __future__ import annotations

import functools
import logging
import pickle
import traceback
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec

import otelflow
from otelflow import toolkit

if TYPE_CHECKING:
    import asyncio

    from otelflow.session import Telemetry

__all__ = ["SUPPORTED_VERSIONS", "instrument", "is_instrumented", "uninstrument"]

_log = logging.getLogger("otelflow")

SUPPORTED_VERSIONS = ("0.6.",)
"""radical-asyncflow versions whose private registration hook this module was written for."""

_ATTR = "_otelflow_asyncflow"
_FLOW_PATCHES = ("_register_component", "execute_block", "workflow_scope", "shutdown")
# Backends that run ``task["function"]`` in a pool and put its return value in the task
# dict: the function can be measured where it runs. Others get engine-side times.
_MEASURABLE = frozenset(("ConcurrentExecutionBackend", "LocalExecutionBackend"))
_warned: set[str] = set()


def _warn_once(key: str, msg: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        _log.warning(msg, *args)


def _version_ok(flow: Any) -> bool:
    """Warn (once per version) about an AsyncFlow this module was not written for."""
    try:
        import radical.asyncflow as af

        version = str(getattr(af, "__version__", "unknown"))
    except ImportError:  # pragma: no cover - a WorkflowEngine without its package
        version = "unknown"
    if not version.startswith(SUPPORTED_VERSIONS):
        _warn_once(
            f"version:{version}",
            "otelflow: radical-asyncflow %s is not a version otelflow's AsyncFlow integration was "
            "written for (%s); it relies on WorkflowEngine._register_component, so check the "
            "recorded tasks, or pin radical-asyncflow==0.6.*.",
            version,
            ", ".join(v + "*" for v in SUPPORTED_VERSIONS),
        )
    if not callable(getattr(flow, "_register_component", None)):
        _warn_once(
            "no-register",
            "otelflow: this WorkflowEngine has no _register_component (radical-asyncflow %s); "
            "its tasks cannot be recorded. Pin radical-asyncflow==0.6.*.",
            version,
        )
        return False
    return True


def instrument(flow: Any, *, telemetry: Telemetry | None = None, worker_telemetry: bool = True) -> Any:
    """Record every task, block and workflow scope of an AsyncFlow ``WorkflowEngine``.

    Returns the same engine. Tasks are recorded while telemetry runs (the process's
    current one, or ``telemetry``). ``flow.shutdown()`` records what is still open as
    canceled and undoes this; :func:`uninstrument` undoes it earlier. A second call on the
    same engine does nothing (and logs a warning).

    Args:
        flow: A ``radical.asyncflow.WorkflowEngine`` (after ``await WorkflowEngine.create()``).
        telemetry: Record on this telemetry instead of the process's current one.
        worker_telemetry: In process-pool workers, join the run so that spans and events
            made inside tasks are recorded too. False measures tasks only.
    """
    if _ATTR in vars(flow):
        _warn_once(
            f"twice:{flow.uid}", "otelflow: %s is already instrumented; instrument() left it as it was.", flow.uid
        )
        return flow
    if not _version_ok(flow):
        return flow
    hooks = _Hooks(flow, telemetry, worker_telemetry)
    hooks.install()
    return flow


def uninstrument(flow: Any) -> Any:
    """Undo :func:`instrument`: the engine and its backends get their own methods back.

    Tasks already running are still recorded when they end (their results are unwrapped
    either way). Returns the engine.
    """
    hooks = vars(flow).get(_ATTR)
    if not isinstance(hooks, _Hooks):
        _log.warning("otelflow: %s is not instrumented; uninstrument() did nothing.", getattr(flow, "uid", flow))
        return flow
    hooks.remove()
    return flow


def is_instrumented(flow: Any) -> bool:
    """True if :func:`instrument` was applied to ``flow`` (and not undone)."""
    return isinstance(vars(flow).get(_ATTR), _Hooks)


def add_closer(flow: Any, closer: Callable[[], Any]) -> None:
    """Run ``closer()`` (awaited if it returns an awaitable) after ``flow.shutdown()``."""
    hooks = vars(flow).get(_ATTR)
    if isinstance(hooks, _Hooks):
        hooks.closers.append(closer)


_measurable_types: dict[type, bool] = {}


def _measurable(backend_type: type) -> bool:
    """True for the backends (and their subclasses) that run ``task["function"]`` in a pool."""
    got = _measurable_types.get(backend_type)
    if got is None:
        got = _measurable_types[backend_type] = any(c.__name__ in _MEASURABLE for c in backend_type.__mro__)
    return got


def _stacktrace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-8192:]


async def _block_body(
    func: Callable[..., Any], ref: toolkit.ScopeRef | None, name: str, block_id: str, /, *args: Any, **kwargs: Any
) -> Any:
    """A ``@flow.block`` body, run inside its otelflow block in the caller's scope."""
    with otelflow.adopt_scope(ref), otelflow.block(name, block_id=block_id):
        return await func(*args, **kwargs)


class _Hooks:
    """The state otelflow keeps for one instrumented engine."""

    def __init__(self, flow: Any, telemetry: Telemetry | None, worker_telemetry: bool) -> None:
        self.flow = flow
        self.telemetry = telemetry
        self.worker_telemetry = worker_telemetry
        # AsyncFlow restarts uids at task.000001 after a shutdown: prefix them with the engine's.
        self.prefix = f"{flow.uid}:"
        self.trk = otelflow.tracker(backend="asyncflow", telemetry=telemetry)
        self.open: dict[str, str] = {}  # AsyncFlow uid -> task id, until its end is recorded
        self.measured: set[str] = set()  # uids whose function runs measured (still in flight)
        self.handed: set[str] = set()  # uids handed to a backend, until their end
        self.blocks: dict[str, tuple[toolkit.ScopeRef | None, str]] = {}
        self.canceled: set[str] = set()
        self.closers: list[Callable[[], Any]] = []
        self.carriers: dict[tuple[toolkit.ScopeRef | None, str], toolkit.Carrier | bytes | None] = {}
        self.shutting_down = False
        self.removed = False
        self.orig: dict[str, Any] = {}
        self.backends: list[tuple[Any, Any]] = []  # (backend, its engine callback)
        states = getattr(flow, "task_states_map", None)
        self.RUNNING = getattr(states, "RUNNING", "RUNNING")
        self.DONE = getattr(states, "DONE", "DONE")
        self.FAILED = getattr(states, "FAILED", "FAILED")
        self.CANCELED = getattr(states, "CANCELED", "CANCELED")

    # -- install / remove -----------------------------------------------------------------

    def _all_backends(self) -> list[Any]:
        # ``_backends`` (private, 0.6) lists every backend; ``backend`` is the default one.
        backends = getattr(self.flow, "_backends", None)
        if isinstance(backends, dict) and backends:
            return list(backends.values())
        return [self.flow.backend]

    def install(self) -> None:
        flow = self.flow
        d = vars(flow)
        for name in _FLOW_PATCHES:
            self.orig[name] = getattr(flow, name)
        d["_register_component"] = self._register_component
        d["execute_block"] = self._execute_block
        d["workflow_scope"] = self._workflow_scope
        d["shutdown"] = self._shutdown
        for backend in self._all_backends():
            # register_callback replaces the one callback a backend has: ours calls the engine's.
            engine_cb = flow.task_callbacks
            bd = vars(backend)
            bd["submit_tasks"] = functools.partial(self._submit_tasks, backend.submit_tasks)
            backend.register_callback(functools.partial(self._callback, engine_cb))
            self.backends.append((backend, engine_cb))
        d[_ATTR] = self

    def remove(self) -> None:
        """Give the engine and its backends their own methods back."""
        if self.removed:
            return
        self.removed = True
        d = vars(self.flow)
        for name in (*_FLOW_PATCHES, _ATTR):
            d.pop(name, None)
        for backend, _ in self.backends:
            vars(backend).pop("submit_tasks", None)
        if not self.measured:
            self._restore_callbacks()
        # else: our callback stays until the measured tasks in flight have been unwrapped.

    def _restore_callbacks(self) -> None:
        for backend, engine_cb in self.backends:
            try:
                backend.register_callback(engine_cb)
            except Exception as exc:  # noqa: BLE001 - a backend that cannot take it back
                _warn_once("restore", "otelflow: could not give %r its callback back: %s", backend, exc)
        self.backends = []

    # -- telemetry ------------------------------------------------------------------------

    def _active(self) -> Telemetry | None:
        tel = self.telemetry or otelflow.current_telemetry()
        return tel if tel is not None and tel.active else None

    # -- registration (TaskCreated) ---------------------------------------------------------

    def _register_component(self, comp_fut: asyncio.Future[Any], comp_type: str, comp_desc: dict[str, Any],
                            task_type: str | None = None) -> Any:  # fmt: skip
        fut = self.orig["_register_component"](comp_fut, comp_type, comp_desc, task_type)
        if self.removed:
            return fut
        try:
            self._registered(comp_fut, comp_type, comp_desc, task_type)
        except Exception as exc:  # noqa: BLE001 - never raise into the engine
            _warn_once("register", "otelflow: could not record an AsyncFlow component: %s: %s", type(exc).__name__, exc)
        return fut

    def _registered(
        self, comp_fut: asyncio.Future[Any], comp_type: str, desc: dict[str, Any], task_type: str | None
    ) -> None:
        uid = desc["uid"]
        name = str(desc.get("name") or comp_type)
        if comp_type == "block":
            self.blocks[uid] = (otelflow.current_scope(), name)
            return
        tel = self._active()
        if tel is None:
            return
        tid = self.prefix + uid
        meta = desc.get("metadata") or {}
        deps = [
            self.prefix + d["uid"] for d in meta.get("dependencies") or () if str(d.get("uid", "")).startswith("task.")
        ]
        attrs: dict[str, str | int | float | bool] = {
            "asyncflow.uid": uid,
            "asyncflow.task_type": task_type or "function",
        }
        if desc.get("workflow_id"):
            attrs["asyncflow.workflow_id"] = str(desc["workflow_id"])
        if desc.get("executable"):
            attrs["asyncflow.executable"] = str(desc["executable"])
        self.trk.created(tid, name, depends_on=deps, attributes=attrs)
        self.open[uid] = tid
        comp_fut.add_done_callback(functools.partial(self._future_done, uid, deps))
        fn = desc.get("function")
        if fn is not None:
            backend = self._backend_of(desc)
            if _measurable(type(backend)):
                carrier = self._carrier(tel, backend)
                desc["function"] = functools.partial(_run_measured(), fn, tid, carrier)
                self.measured.add(uid)

    def _carrier(self, tel: Telemetry, backend: Any) -> toolkit.Carrier | bytes | None:
        """The carrier for tasks submitted in the current scope, made once per scope.

        Without a task id (the worker derives the task's span from the trace id and task
        id); as pickle bytes for a process pool, which cloudpickle copies instead of
        walking (see ``_measure``).
        """
        scope = otelflow.current_scope()
        key = (scope, tel.run_id)
        got = self.carriers.get(key)
        if got is None:
            c = toolkit.carrier(telemetry=tel, join=self.worker_telemetry)
            if c is not None:
                c = msgspec.structs.replace(c, traceparent=None, scope=scope)
            executor = getattr(backend, "executor", None)
            in_threads = executor is None or isinstance(executor, ThreadPoolExecutor)
            got = c if in_threads or c is None else pickle.dumps(c)
            if len(self.carriers) >= 256:
                self.carriers.clear()
            self.carriers[key] = got
        return got

    def _backend_of(self, desc: dict[str, Any]) -> Any:
        target = desc.get("target_backend")
        backends = getattr(self.flow, "_backends", None)
        return backends.get(target) if target and isinstance(backends, dict) else self.flow.backend

    # -- backend: submitted, queued, worker times -------------------------------------------

    async def _submit_tasks(
        self, orig: Callable[..., Any], tasks: list[dict[str, Any]], *args: Any, **kwargs: Any
    ) -> Any:
        if not self.removed:
            for t in tasks:
                tid = self.open.get(str(t.get("uid"))) if isinstance(t, dict) else None
                if tid is not None:
                    self.handed.add(str(t.get("uid")))
                    self.trk.submitted(tid)
        return await orig(tasks, *args, **kwargs)

    def _callback(self, engine_cb: Callable[..., Any], task: Any, state: str, *args: Any, **kwargs: Any) -> Any:
        try:
            self._on_state(task, state)
        except Exception as exc:  # noqa: BLE001 - the engine's callback must still run
            _warn_once(
                "callback", "otelflow: could not record an AsyncFlow task state: %s: %s", type(exc).__name__, exc
            )
        return engine_cb(task, state, *args, **kwargs)

    def _on_state(self, task: Any, state: str) -> None:
        if not isinstance(task, dict):
            return  # not a task dict (no measured result to unwrap): the future's end records it
        uid = task.get("uid")
        if uid is None:
            return
        outcome: toolkit.Outcome | None = None
        if (state in (self.DONE, self.FAILED, self.CANCELED)) and uid in self.measured:
            self.measured.discard(uid)
            rv = task.get("return_value")
            if isinstance(rv, toolkit.Returned):
                # Give AsyncFlow the task's own value, as if nothing wrapped it.
                task["return_value"] = rv.value
                task["stdout"] = str(rv.value)
                outcome = rv.outcome
            exc = task.get("exception")
            if isinstance(exc, BaseException):
                outcome = toolkit.outcome_of(exc)
            if self.removed and not self.measured:
                self._restore_callbacks()
        tid = self.open.get(uid)
        if tid is None:
            return
        trk = self.trk
        if state != self.RUNNING:
            self.handed.discard(uid)
        if state == self.RUNNING:
            trk.queued(tid)  # handed to the executor: it waits there for a worker
            if uid not in self.measured:
                trk.started(tid)  # the closest an unmeasured task gets
            return
        if state == self.DONE:
            del self.open[uid]
            if outcome is not None:
                trk.record_outcome(tid, outcome)
            else:
                trk.completed(tid)
        elif state == self.FAILED:
            del self.open[uid]
            if outcome is not None:
                trk.record_outcome(tid, outcome)
                return
            exc = task.get("exception")
            if isinstance(exc, BaseException):
                trk.failed(tid, exc, stacktrace=_stacktrace(exc))
            else:  # an executable that exited non-zero: AsyncFlow raises RuntimeError(stderr)
                stderr = str(task.get("stderr") or "")[-2000:]
                trk.failed(tid, "RuntimeError", message=f"exit code {task.get('exit_code')}: {stderr}".strip())
        elif state == self.CANCELED:
            del self.open[uid]
            self.canceled.add(uid)
            trk.canceled(tid, reason="canceled while running")

    # -- futures AsyncFlow settles without a callback ------------------------------------------

    def _future_done(self, uid: str, deps: list[str], fut: asyncio.Future[Any]) -> None:
        tid = self.open.pop(uid, None)
        if tid is None:
            return
        try:
            if fut.cancelled():
                self.canceled.add(uid)
                if self.shutting_down:
                    reason = "the engine shut down"
                elif any(d[len(self.prefix) :] in self.canceled for d in deps):
                    reason = "an upstream task was canceled"
                else:
                    reason = "canceled while running" if uid in self.handed else "canceled before it ran"
                self.trk.canceled(tid, reason=reason)
                return
            exc = fut.exception()
            if exc is not None:  # DependencyFailureError: an upstream failed, it never ran
                self.trk.failed(tid, exc, stacktrace=_stacktrace(exc))
            else:
                self.trk.completed(tid)
        finally:
            self.measured.discard(uid)
            self.handed.discard(uid)
            if self.removed and self.backends and not self.measured:
                self._restore_callbacks()

    # -- scopes ------------------------------------------------------------------------------

    @asynccontextmanager
    async def _workflow_scope(self, workflow_id: str | None = None) -> AsyncIterator[str]:
        async with self.orig["workflow_scope"](workflow_id) as wid:
            # AsyncFlow's workflow id is the otelflow workflow id; an id you chose is its name too.
            with otelflow.workflow_scope(workflow_id, workflow_id=wid):
                yield wid

    async def _execute_block(
        self, block_fut: asyncio.Future[Any], func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        desc = getattr(block_fut, "block", None)
        uid = desc.get("uid") if isinstance(desc, dict) else None
        if uid is not None and uid in self.blocks and self._active() is not None:
            ref, name = self.blocks.pop(uid)
            func = functools.partial(_block_body, func, ref, name, self.prefix + uid)
        elif uid is not None:
            self.blocks.pop(uid, None)
        return await self.orig["execute_block"](block_fut, func, *args, **kwargs)

    # -- shutdown --------------------------------------------------------------------------------

    async def _shutdown(self, *args: Any, **kwargs: Any) -> Any:
        self.shutting_down = True
        try:
            return await self.orig["shutdown"](*args, **kwargs)
        finally:
            # AsyncFlow cancels every open future (their done-callbacks have run by now);
            # whatever is still open was lost with the backend: canceled, not left open.
            for tid in self.open.values():
                self.trk.canceled(tid, reason="the engine shut down")
            self.open.clear()
            self.measured.clear()
            self.handed.clear()
            self.blocks.clear()
            self.remove()
            for closer in self.closers:
                try:
                    res = closer()
                    if hasattr(res, "__await__"):
                        await res
                except Exception as exc:  # noqa: BLE001 - shutdown must finish
                    _log.warning(
                        "otelflow: closing telemetry at flow.shutdown() failed: %s: %s", type(exc).__name__, exc
                    )
            self.closers.clear()


def _run_measured() -> Callable[..., Any]:
    from otelflow.integrations.asyncflow._measure import run_measured

    return run_measured
