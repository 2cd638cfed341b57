"""What runs where the task runs: the thread-pool wrapper and the worker-process session.

* :class:`LocalCall` (thread pools): runs in a worker thread of the submitting process.
  It records ``TaskStarted`` and the terminal step itself, with the worker thread's clock,
  inside a copy of the submitter's ``contextvars`` context (so workflow/block scopes
  follow) and with the task span as the current OTel span.
* Process pools and any other executor use the public :class:`otelflow.toolkit.Measured`
  wrapper; this module holds what it needs in a worker process: :class:`ProcessUsage`
  (CPU seconds and peak RSS of one task) and the worker session below.

In a worker *process*, user spans (``opentelemetry.trace.get_tracer(...)``) and
``otelflow.emit()`` need somewhere to go. :func:`worker_session` lazily starts, once per
process, a ``Telemetry(role="worker")`` joined to the parent's run directory, trace and
session: it writes ``worker-<host>-<pid>.jsonl`` next to the parent's file (one process,
one file) and never ``run.json``. It is flushed after each task that made spans or events,
because pool workers end with ``os._exit`` (no ``atexit``), and stopped by a ``multiprocessing.util.Finalize`` when
the worker exits normally. A worker killed with SIGKILL therefore loses nothing that a
finished task wrote.

Fork safety: a forked child forgets the session it inherited (see ``_after_fork``); the
core resets the process's current telemetry. No lock taken here is held across a call
that could fork.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from otelflow import _global
from otelflow.logs.capture import LogCapture, capture_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from otelflow.session import Telemetry
    from otelflow.tasks import TaskTracker

__all__ = [
    "LocalCall",
    "ProcessUsage",
    "WorkerConfig",
    "current_session",
    "current_worker_session",
    "flush_if_used",
    "flush_worker_session",
    "stop_worker_session",
    "worker_session",
]

_log = logging.getLogger("otelflow")

_SAMPLED = otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED)
_now = time.time_ns
_process_time = time.process_time
_thread_time_ns = time.thread_time_ns


# --- thread pools ----------------------------------------------------------------------------


class LocalCall:
    """A task for a thread pool: records its own start and end in the worker thread.

    Args:
        fn: The user's callable.
        task_id: The task's id (already recorded as created and submitted).
        tracker: The tracker that recorded it.
        ctx: The submitter's ``contextvars`` context (copied at ``submit()``).
    """

    __slots__ = ("ctx", "fn", "task_id", "tracker")

    def __init__(self, fn: Callable[..., Any], task_id: str, tracker: TaskTracker, ctx: contextvars.Context):
        self.fn = fn
        self.task_id = task_id
        self.tracker = tracker
        self.ctx = ctx

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.ctx.run(self._run, args, kwargs)

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        trk = self.tracker
        tid = self.task_id
        trk.started(tid, worker=threading.current_thread().name)
        entry = trk.enter(tid)  # its span current (derived only if asked for), its id for logs
        cpu0 = _thread_time_ns()  # CPU of this worker thread only: the task runs in it
        try:
            result = self.fn(*args, **kwargs)
        except BaseException as exc:
            trk.failed(tid, exc, cpu_time_s=(_thread_time_ns() - cpu0 + 500) // 1000 / 1e6)
            raise
        finally:
            trk.leave(entry)
        trk.completed(tid, cpu_time_s=(_thread_time_ns() - cpu0 + 500) // 1000 / 1e6)  # s, to the µs
        return result


# --- process pools ---------------------------------------------------------------------------


class WorkerConfig:
    """What a worker process needs to join the parent's run (pickled with every task).

    Attributes:
        parent_pid: The submitting process; a call running there needs no worker session.
        runs_dir: The parent's runs directory, or None when it writes no run directory.
        run_id: The parent's run id (the worker writes into the same run directory).
        trace_id: The parent session's trace id (32 hex digits).
        session_id: The parent session's id.
        service_name: The parent's ``service.name``.
        flush_interval: The parent's JSONL flush interval.
        set_global_providers: The parent's policy for the OTel global tracer provider.
        session: Start a worker session for user spans and events (``worker_telemetry=``).
        session_span_id: The parent's session span id (16 hex digits).
        log_capture: The parent's log capture (``otelflow.logs.LogCapture``), applied in
            the worker session (and undone when it stops); None captures nothing.
        trace_per: The parent's ``trace_per`` setting, so the worker's spans made under an
            adopted scope are in the trace the parent records the scope in.
    """

    __slots__ = (
        "flush_interval",
        "log_capture",
        "parent_pid",
        "run_id",
        "runs_dir",
        "service_name",
        "session",
        "session_id",
        "session_span_id",
        "set_global_providers",
        "trace_id",
        "trace_per",
    )

    def __init__(
        self,
        parent_pid: int,
        runs_dir: str | None,
        run_id: str,
        trace_id: str,
        session_id: str,
        service_name: str | None,
        flush_interval: float,
        set_global_providers: str,
        session: bool,
        session_span_id: str | None = None,
        log_capture: LogCapture | None = None,
        trace_per: str = "session",
    ) -> None:
        self.parent_pid = parent_pid
        self.runs_dir = runs_dir
        self.run_id = run_id
        self.trace_id = trace_id
        self.session_id = session_id
        self.service_name = service_name
        self.flush_interval = flush_interval
        self.set_global_providers = set_global_providers
        self.session = session
        self.session_span_id = session_span_id
        self.log_capture = log_capture
        self.trace_per = trace_per

    @classmethod
    def of(cls, tel: Telemetry, session: bool) -> WorkerConfig:
        """The config for workers of ``tel`` (a running telemetry of this process)."""
        s = tel.settings
        service = tel.resource.attributes.get("service.name") if tel.resource is not None else None
        return cls(
            parent_pid=os.getpid(),
            # the parent's absolute runs directory: a worker's cwd may differ
            runs_dir=str(tel.run_dir.parent) if tel.run_dir is not None else None,
            run_id=tel.run_id,
            trace_id=tel.trace_id,
            session_id=tel.session_id,
            service_name=str(service) if service is not None else None,
            flush_interval=s.flush_interval,
            set_global_providers=s.set_global_providers,
            session=session,
            session_span_id=f"{tel.session_span_id:016x}",
            log_capture=capture_for(tel),
            trace_per=s.trace_per,
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (
            WorkerConfig,
            (
                self.parent_pid,
                self.runs_dir,
                self.run_id,
                self.trace_id,
                self.session_id,
                self.service_name,
                self.flush_interval,
                self.set_global_providers,
                self.session,
                self.session_span_id,
                self.log_capture,
                self.trace_per,
            ),
        )


_HOST = socket.gethostname()


def _worker_name(pid: int) -> str:
    return f"{_HOST}:{pid}"


# --- per-task resource use -------------------------------------------------------------------

try:
    import resource as _resource
except ImportError:  # pragma: no cover - Windows
    _resource = None  # type: ignore[assignment]

# Linux can reset a process's peak RSS ("5" > /proc/self/clear_refs, since 4.0), which gives
# the peak of this task alone (VmHWM afterwards); elsewhere the peak is the worker's
# high-water mark so far (an upper bound). Both files stay open (per process: a forked
# child reopens them, since the parent's descriptors name the parent).
_proc_pid = -1
_clear_fd: int | None = None
_status_fd: int | None = None
_proc_ok = os.path.exists("/proc/self/clear_refs")


def _proc_files() -> bool:
    global _proc_pid, _clear_fd, _status_fd, _proc_ok
    pid = os.getpid()
    if _proc_pid == pid:
        return _clear_fd is not None
    _proc_pid = pid
    _clear_fd = _status_fd = None  # inherited descriptors (if any) stay with the parent's
    if not _proc_ok:
        return False
    try:
        _clear_fd = os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
        _status_fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        _proc_ok = False
        _clear_fd = _status_fd = None
        return False
    return True


def _reset_peak() -> bool:
    if not _proc_files():
        return False
    try:
        os.write(_clear_fd, b"5")  # type: ignore[arg-type]
    except OSError:
        return False
    return True


def _peak_since_reset() -> int | None:
    try:
        data = os.pread(_status_fd, 8192, 0)  # type: ignore[arg-type]
        i = data.find(b"VmHWM:")
        if i < 0:
            return None
        return int(data[i + 6 : data.index(b"kB", i)]) * 1024
    except (OSError, ValueError, TypeError):
        return None


def _children() -> tuple[float, int]:
    if _resource is None:
        return 0.0, 0
    ru = _resource.getrusage(_resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def _self_maxrss() -> int | None:
    if _resource is None:
        return None
    scale = 1 if os.uname().sysname == "Darwin" else 1024  # bytes on macOS, KiB elsewhere
    return _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss * scale


class ProcessUsage:
    """CPU seconds and peak RSS of this process (and its waited-for children) over one task.

    CPU is process-wide (all threads: a task's own threads count, and so does otelflow's
    worker-session thread, which is idle unless the task makes spans or events).

    Args:
        reset: Reset the process's peak RSS first, to measure this task's own peak. Only
            for a worker process: False (the submitting process) reports the process's
            high-water mark so far and leaves it alone.
    """

    __slots__ = ("child_cpu", "child_rss", "cpu", "reset")

    def __init__(self, reset: bool = True) -> None:
        self.reset = _reset_peak() if reset else False
        self.child_cpu, self.child_rss = _children()
        self.cpu = _process_time()

    def end(self) -> tuple[float, int | None]:
        cpu = _process_time() - self.cpu
        child_cpu, child_rss = _children()
        cpu += max(0.0, child_cpu - self.child_cpu)
        peak = _peak_since_reset() if self.reset else None
        if peak is None:
            peak = _self_maxrss()
        if child_rss > self.child_rss and peak is not None:
            # A child that ended during the task set a new high-water mark (KiB on Linux).
            peak = max(peak, child_rss * 1024)
        return round(cpu, 6), peak


# --- the worker session ----------------------------------------------------------------------

_lock = threading.Lock()
_session: Telemetry | None = None
_session_run: str | None = None
_finalizer_registered = False
_failed_runs: set[str] = set()


def current_session(run_id: str) -> Telemetry | None:
    """This process's running worker session for run ``run_id``, or None (no lock: hot path)."""
    sess = _session
    if sess is not None and _session_run == run_id and sess.active:
        return sess
    return None


def worker_session(
    cfg: WorkerConfig, forward: Callable[[bytes], object] | None = None, export: bool = False
) -> Telemetry | None:
    """Return this worker process's session for ``cfg``'s run, starting it if needed.

    Returns None when the parent writes no run directory, when telemetry the user started
    in this process is current (user spans go there), or when starting failed (logged once
    per run; the task still runs and is measured).
    """
    global _session, _session_run
    if cfg.runs_dir is None:
        return None
    current = _global.current()
    if current is not None and current.active and current is not _session:
        return None
    sess = _session
    if sess is not None and _session_run == cfg.run_id and sess.active:
        return sess
    with _lock:
        sess = _session
        if sess is not None and _session_run == cfg.run_id and sess.active:
            return sess
        if cfg.run_id in _failed_runs:
            return None
        if sess is not None:  # a new run in the parent: this worker moves to it
            _stop(sess)
            _session = None
        try:
            sess = _start(cfg, forward, export)
        except Exception as exc:  # noqa: BLE001 - measure the task anyway
            _failed_runs.add(cfg.run_id)
            _log.warning(
                "otelflow could not start telemetry in worker process %d (%s); spans and "
                "events made inside its tasks are not recorded. The tasks themselves are.",
                os.getpid(),
                exc,
            )
            return None
        _session, _session_run = sess, cfg.run_id
        _register_finalizer()
        return sess


def _start(cfg: WorkerConfig, forward: Callable[[bytes], object] | None = None, export: bool = False) -> Telemetry:
    from otelflow.session import Telemetry

    tel = Telemetry(
        role="worker",
        checkpoint_path=cfg.runs_dir,
        run_id=cfg.run_id,
        resource_poll_interval=0,
        # Metric snapshots of a worker hold nothing of interest (its tasks are counted by
        # the parent); one at stop is enough.
        checkpoint_interval=3600,
        service_name=cfg.service_name,
        flush_interval=cfg.flush_interval,
        set_global_providers=cfg.set_global_providers,
        trace_per=cfg.trace_per,
        span_processors=[_activity],
        # The parent's exporters are not repeated here: worker lines reach the run
        # directory only (see docs/executors.md). environ={} keeps an inherited
        # OTEL_TRACES_EXPORTER from starting exporters in every worker — unless the worker
        # exports its own spans (export=True: this process's OTEL_* settings, traces only;
        # its tasks are counted by the parent, so it exports no metrics).
        environ={**os.environ, "OTEL_METRICS_EXPORTER": "none"} if export else {},
        # Join the parent's trace and session, so lines the worker writes (user spans,
        # events, logs) carry the parent's trace, session and session span ids.
        trace_id=cfg.trace_id,
        session_id=cfg.session_id,
        session_span_id=cfg.session_span_id,
        forward=forward,
    )
    tel.start()
    if cfg.log_capture is not None:
        # The parent's log capture, applied here; the session's stop() undoes it.
        tel._log_handler = cfg.log_capture.apply(tel)
    _count_puts(tel)
    return tel


class _Activity(SpanProcessor):
    """Counts what the worker session was given, so a task that recorded nothing skips the flush.

    Spans ended through the session's tracer provider arrive here; events (``emit()``) are
    counted by :func:`_count_puts`. A lost increment (two threads at once) can only cost one
    early flush, never a line.
    """

    def __init__(self) -> None:
        self.records = 0
        self.flushed = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.records += 1

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_activity = _Activity()


def _count_puts(sess: Telemetry) -> None:
    put = sess.bus_put
    act = _activity
    act.flushed = act.records + sess._logs_captured  # a new session: nothing of it is unflushed yet

    def counting_put(item: Any) -> bool:
        act.records += 1
        return put(item)

    sess.bus_put = counting_put


def flush_worker_session(timeout: float = 5.0) -> None:
    """Flush this process's worker session now, if one runs (never raises)."""
    sess = _session
    if sess is None or not sess.active:
        return
    try:
        sess.flush(timeout=timeout)
    except Exception:  # noqa: BLE001 - never fail a task because of its telemetry
        pass


def current_worker_session() -> Telemetry | None:
    """This process's running worker session, or None."""
    sess = _session
    return sess if sess is not None and sess.active else None


def flush_if_used(sess: Telemetry) -> None:
    """Write what the task recorded before its result is sent back.

    A flush is a round trip to the session's dispatcher thread (15-50 µs), so it is
    skipped when the task recorded nothing.
    """
    act = _activity
    records = act.records + sess._logs_captured
    if records == act.flushed:
        return
    act.flushed = records
    try:
        sess.flush(timeout=5.0)
    except Exception:  # noqa: BLE001 - never fail a task because of its telemetry
        pass


def _stop(sess: Telemetry) -> None:
    try:
        sess.stop(timeout=5.0)
    except Exception as exc:  # noqa: BLE001 - the worker is exiting
        _log.debug("otelflow worker session stop failed: %s", exc)


def stop_worker_session() -> None:
    """Stop this process's worker session, if any (runs at worker exit)."""
    global _session, _session_run
    with _lock:
        sess, _session, _session_run = _session, None, None
    if sess is not None:
        _stop(sess)


def _register_finalizer() -> None:
    global _finalizer_registered
    if _finalizer_registered:
        return
    _finalizer_registered = True
    try:
        from multiprocessing import util

        # Pool workers leave through multiprocessing's _exit_function and then os._exit:
        # atexit handlers never run there, finalizers with an exit priority do.
        util.Finalize(None, stop_worker_session, exitpriority=100)
    except Exception:  # noqa: BLE001 - not a multiprocessing worker; atexit still applies
        pass


def _after_fork() -> None:
    # The child must not use (or stop) a session inherited from its parent: the core marks
    # that Telemetry stopped; here we forget it and renew the lock, which the parent may
    # have held at the moment of the fork.
    global _lock, _session, _session_run, _finalizer_registered
    _lock = threading.Lock()
    _session = None
    _session_run = None
    _finalizer_registered = False
    _failed_runs.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
