"""The worker plugin: when each tracked task really ran, measured on the worker.

It runs in every worker process, on the worker's event loop. For a task carrying the
``otelflow`` annotation it

* wraps the task's function (``run_spec.func``, once, just before Dask runs it) so that the
  function runs inside the task's trace context and workflow/block scope
  (``toolkit.task_context``) and its start and end are taken with the worker's clock in
  the thread that runs it;
* sends ``B`` (began: only for a task still running after ``flush_interval``) and ``F``
  (ended, with Dask's time breakdown and the error type) records to the scheduler plugin
  through ``worker.log_event`` — the same connection the task's result takes, and ahead
  of it;
* joins the client's run (``toolkit.join_run``) with a forwarder, so user spans, events
  and logs made inside tasks travel home as JSONL over that connection too.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
from typing import TYPE_CHECKING, Any

from distributed.diagnostics.plugin import WorkerPlugin
from tornado.ioloop import PeriodicCallback

from otelflow.integrations.dask._protocol import ANNOTATION, WORKER_PLUGIN, WORKER_TOPIC, task_id_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from distributed import Worker

__all__ = ["WorkerRecorder"]

_log = logging.getLogger("otelflow")
_now = time.time_ns
_MAX_TEXT = 8192


class WorkerRecorder(WorkerPlugin):
    """Measures tracked tasks where they run; registered by ``otelflow.instrument(client)``.

    Args:
        flush_interval: Seconds a task may run before its start is sent on its own
            (shorter tasks send start and end together, once).
        user_telemetry: Join the client's run in each worker so user spans, events and
            logs made inside tasks are recorded (sent home over Dask's connections).
        export: Also export the spans made in tasks from the worker itself, with the
            worker's own OTLP settings. None (default): when the worker process has an
            OTLP configuration of its own (``OTEL_EXPORTER_OTLP_ENDPOINT``,
            ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER``). The lines
            still go home to the run directory; only the worker exports them over OTLP.
    """

    name = WORKER_PLUGIN
    idempotent = True

    def __init__(self, flush_interval: float = 0.05, user_telemetry: bool = True, export: bool | None = None) -> None:
        self.flush_interval = flush_interval
        self.user_telemetry = user_telemetry
        self.export = export
        self.worker: Worker | None = None
        self._buf: dict[str, list[list[Any]]] = {}
        # key -> [client id, task id, run id, t at ready->executing, B sent?]
        self._running: dict[Any, list[Any]] = {}
        # key -> (start, end) ns, set by the wrapper in the executing thread
        self._times: dict[Any, tuple[int, int]] = {}
        self._starts: dict[Any, int] = {}
        self._pc: PeriodicCallback | None = None
        self._pid = os.getpid()
        self._runs: dict[str, Any] = {}  # run id -> Carrier (or None if joining failed)
        self._carriers: dict[tuple[str, Any], Any] = {}  # (run id, scope) -> Carrier

    def setup(self, worker: Worker) -> None:
        self.worker = worker
        self._pid = os.getpid()
        self._pc = PeriodicCallback(self._tick, self.flush_interval * 1000)
        self._pc.start()

    def teardown(self, worker: Worker) -> None:
        if self._pc is not None:
            self._pc.stop()
            self._pc = None
        self._flush()
        _leave_run()

    # -- transitions -----------------------------------------------------------------------

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "executing":
            pass
        elif start not in ("executing", "long-running") or finish == "long-running":
            return  # a task that seceded (long-running) still runs
        try:
            if finish == "executing":
                self._began(key)
            else:
                self._ended(key, finish)
        except Exception as exc:  # noqa: BLE001 - a plugin must never break the worker
            _log.debug("otelflow: worker transition of %r not recorded: %s", key, exc)

    def _began(self, key: Any) -> None:
        w = self.worker
        if w is None:
            return
        ts = w.state.tasks.get(key)
        if ts is None or not ts.annotations:
            return
        ann = ts.annotations.get(ANNOTATION)
        if not isinstance(ann, dict):
            return
        cid = ann.get("c")
        if not isinstance(cid, str):
            return
        tid = task_id_of(key)
        self._running[key] = [cid, tid, ts.run_id, _now(), False]
        spec: Any = ts.run_spec
        func = getattr(spec, "func", None)
        if func is None or isinstance(func, _InTask) or getattr(spec, "is_coro", True):
            return
        spec.func = _InTask(func, key, tid, self._carrier(ann), self)

    def _ended(self, key: Any, finish: str) -> None:
        run = self._running.pop(key, None)
        self._starts.pop(key, None)
        times = self._times.pop(key, None)
        if run is None or self.worker is None:
            return
        cid, tid, _run_id, t_exec, _sent = run
        ts = self.worker.state.tasks.get(key)
        if times is None:
            times = self._from_startstops(ts, t_exec)
        etype = emsg = tb = None
        if finish == "error" and ts is not None:
            etype = _error_type(ts)
            emsg = (ts.exception_text or "")[:_MAX_TEXT]
            tb = _user_frames(ts.traceback_text or "")[:_MAX_TEXT]
        elif finish != "memory":
            etype = f"dask.{finish}"  # rescheduled / released while running
        breakdown = _breakdown(ts)
        rec: list[Any] = ["F", tid, times[0], times[1]]
        if etype is not None or breakdown:  # the common case stays four fields
            rec += [etype, emsg, tb, breakdown]
        self._add(cid, rec)
        self._flush()

    def _from_startstops(self, ts: Any, t_exec: int) -> tuple[int, int]:
        # An unwrapped task (async): Dask's compute times, shifted back to this worker's clock.
        delay = getattr(self.worker, "scheduler_delay", 0.0) or 0.0
        for ss in getattr(ts, "startstops", None) or ():
            if ss.get("action") == "compute":
                return int((ss["start"] - delay) * 1e9), int((ss["stop"] - delay) * 1e9)
        return t_exec, _now()

    # -- sending ------------------------------------------------------------------------------

    def _add(self, cid: str, rec: list[Any]) -> None:
        buf = self._buf.get(cid)
        if buf is None:
            self._buf[cid] = [rec]
        else:
            buf.append(rec)

    def _tick(self) -> None:
        # Tasks running for a while: send their start now, so the client sees them run.
        if self._running and self.worker is not None:
            horizon = _now() - int(self.flush_interval * 1e9)
            for key, run in self._running.items():
                if not run[4] and run[3] <= horizon:
                    run[4] = True
                    t = self._starts.get(key, run[3])
                    self._add(run[0], ["B", run[1], run[2], t, self.worker.address, self._pid])
        self._flush()

    def _flush(self) -> None:
        w = self.worker
        if not self._buf or w is None:
            return
        buf, self._buf = self._buf, {}
        try:
            w.log_event(WORKER_TOPIC, buf)
        except Exception as exc:  # noqa: BLE001 - e.g. the worker is closing
            _log.debug("otelflow: worker records not sent: %s", exc)

    def forward(self, cid: str, source: str) -> Callable[[bytes], None]:
        """A forwarder for ``toolkit.join_run``: JSONL bytes go home with the task records."""
        w = self.worker

        def send(data: bytes) -> None:
            if w is not None:
                w.log_event(WORKER_TOPIC, {cid: [["J", source, bytes(data)]]})

        return send

    # -- joining the run ------------------------------------------------------------------------

    def _carrier(self, ann: dict[str, Any]) -> Any:
        """The task's carrier (its run and its scope); joins the run the first time."""
        carrier = ann.get("k")
        cid = ann.get("c")
        if not self.user_telemetry or not isinstance(carrier, dict) or not isinstance(cid, str):
            return None
        run_id = str(carrier.get("run_id"))
        scope = carrier.get("scope")
        key = (run_id, tuple(sorted(scope.items())) if isinstance(scope, dict) else None)
        c = self._carriers.get(key)
        if c is not None or key in self._carriers:
            return c
        if run_id not in self._runs:  # a new run: join it (one run at a time per process)
            _stop_logs()
            export = _own_otlp_config() if self.export is None else self.export
            self._runs = {run_id: _join_run(carrier, self, cid, bool(ann.get("l")), export)}
            self._carriers.clear()
        c = _from_dict(carrier) if self._runs[run_id] is not None else None
        if len(self._carriers) >= 256:  # bounded: scopes are many only in odd programs
            self._carriers.clear()
        self._carriers[key] = c
        return c


class _InTask:
    """The task's function, run inside its trace context and timed in the executing thread."""

    __slots__ = ("carrier", "fn", "key", "plugin", "task_id")

    def __init__(self, fn: Callable[..., Any], key: Any, task_id: str, carrier: Any, plugin: WorkerRecorder):
        self.fn = fn
        self.key = key
        self.task_id = task_id
        self.carrier = carrier
        self.plugin = plugin

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        plugin = self.plugin
        key = self.key
        _in_task.active = True
        _in_task.logged = False
        start = _now()
        if key in plugin._running:
            plugin._starts[key] = start
        try:
            if self.carrier is None:
                return self.fn(*args, **kwargs)
            return _run_in_context(self.carrier, self.task_id, self.fn, args, kwargs)
        finally:
            _in_task.active = False
            if key in plugin._running:  # not if it was released meanwhile (canceled)
                plugin._times[key] = (start, _now())
            if self.carrier is not None:
                _flush_worker(force=_in_task.logged)

    def __repr__(self) -> str:
        return repr(self.fn)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # A task spec sent on elsewhere (e.g. stolen) carries the user's function only.
        return (_identity, (self.fn,))


def _identity(x: Any) -> Any:
    return x


def _user_frames(tb: str) -> str:
    """The traceback without the frames of otelflow's own wrapper (the user's code only)."""
    frames = tb.split('  File "')
    kept = [f for f in frames[1:] if not f.startswith(__file__)]
    return "".join('  File "' + f for f in kept) if kept else tb


def _error_type(ts: Any) -> str:
    """The qualified type of the exception a task raised (Dask keeps it pickled)."""
    data = getattr(ts.exception, "data", ts.exception)
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = pickle.loads(data)
        except Exception:  # noqa: BLE001 - a type this worker cannot load: fall back to the text
            data = None
    if isinstance(data, BaseException):
        return _type_name(data)
    text = ts.exception_text or ""
    return text.split("(", 1)[0].strip() or "Exception"


def _type_name(exc: BaseException) -> str:
    tp = type(exc)
    mod = tp.__module__
    return tp.__qualname__ if mod in ("builtins", "__main__") else f"{mod}.{tp.__qualname__}"


def _breakdown(ts: Any) -> dict[str, float]:
    """Dask's own per-task times on this worker besides compute: ``{action: seconds}``.

    The task's own ``startstops`` (``disk-read``, ``deserialize`` …) plus ``transfer``: the
    time spent fetching its dependencies from other workers (Dask books that on them).
    """
    out: dict[str, float] = {}
    for ss in getattr(ts, "startstops", None) or ():
        action = ss.get("action")
        if action and action != "compute":
            out[action] = out.get(action, 0.0) + max(0.0, ss["stop"] - ss["start"])
    for dep in getattr(ts, "dependencies", None) or ():
        for ss in getattr(dep, "startstops", None) or ():
            if ss.get("action") == "transfer":
                out["transfer"] = out.get("transfer", 0.0) + max(0.0, ss["stop"] - ss["start"])
    return out


# --- the toolkit calls (kept together: the only place the worker joins a run) ----------------


_in_task = threading.local()
_log_handler: logging.Handler | None = None


def _own_otlp_config() -> bool:
    env = os.environ
    return (
        any(
            env.get(k)
            for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER")
        )
        and env.get("OTEL_TRACES_EXPORTER") != "none"
    )


def _join_run(carrier: dict[str, Any], plugin: WorkerRecorder, cid: str, capture_logs: bool, export: bool) -> Any:
    from otelflow import toolkit

    try:
        c = _from_dict(carrier)
        if c is None:
            return None
        source = f"worker-{_host()}-{os.getpid()}"
        tel = toolkit.join_run(c, forward=plugin.forward(cid, source), export=export)
    except Exception as exc:  # noqa: BLE001 - measure the task anyway
        _log.warning("otelflow could not join the run in Dask worker %d: %s", os.getpid(), exc)
        return None
    if tel is not None and capture_logs:
        _capture_logs(tel)
    # Without a session of its own (e.g. threads in the client's process, where the
    # client's telemetry records directly) the task context still applies.
    return c


def _capture_logs(tel: Any) -> None:
    """Bridge ``logging`` records made inside tasks into the worker session (as the client does)."""
    global _log_handler
    from otelflow.integrations.logging import LogBridgeHandler

    handler = LogBridgeHandler(tel, getattr(tel.settings, "log_level", logging.INFO))
    # Only records from task code: the worker's own logging is Dask's, not the run's.
    handler.addFilter(_task_record)
    logging.getLogger().addHandler(handler)
    _log_handler = handler


def _task_record(record: logging.LogRecord) -> bool:
    if getattr(_in_task, "active", False):
        _in_task.logged = True
        return True
    return False


def _stop_logs() -> None:
    global _log_handler
    if _log_handler is not None:
        logging.getLogger().removeHandler(_log_handler)
        _log_handler = None


def _from_dict(carrier: dict[str, Any]) -> Any:
    from otelflow import toolkit

    return toolkit.Carrier.from_dict(carrier)


def _run_in_context(carrier: Any, task_id: str, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    from otelflow import toolkit

    with toolkit.task_context(carrier, task_id):
        return fn(*args, **kwargs)


def _flush_worker(force: bool) -> None:
    from otelflow import toolkit

    try:
        # Skipped when the task recorded nothing; captured logs are not counted as
        # records there, so a task that logged is always flushed.
        toolkit.flush_worker(if_used=not force)
    except Exception:  # noqa: BLE001 - never fail a task because of its telemetry
        pass


def _leave_run() -> None:
    _stop_logs()
    try:
        from otelflow import toolkit

        toolkit.leave_run()
    except Exception:  # noqa: BLE001 - the worker is closing; no toolkit yet
        pass


def _host() -> str:
    import socket

    return socket.gethostname()
