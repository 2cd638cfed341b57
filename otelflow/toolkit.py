"""The integration toolkit: the public pieces every engine integration is built on.

An integration (executors, asyncio, AsyncFlow, Dask, Parsl, Academy — or yours) needs four
things beyond :class:`otelflow.TaskTracker`'s lifecycle calls. See docs/integrations.md.

1. **Carry a scope** into threads, asyncio tasks or processes the engine creates itself:
   :func:`current_scope` where work is submitted, :func:`adopt_scope` where it runs.
2. **Measure in the worker**: :class:`Measured` / :class:`AsyncMeasured` run a function for
   one task id and return its :class:`Outcome` (worker-side start/end, CPU seconds, peak
   RSS, error type/message/stacktrace) with the result — or attached to the raised
   exception (:func:`outcome_of`). :meth:`otelflow.TaskTracker.record_outcome` records it.
3. **Join the run from a worker**: :func:`carrier` (submit side) gives a small picklable,
   JSON-encodable :class:`Carrier`; :func:`join_run` (worker side) joins the run — its own
   file in a shared run directory, or its lines forwarded over the engine's connection to
   :func:`ingest` on the submit side; :func:`task_context` makes a task's span and scope
   current while the task runs.
4. **Task span ids** are deterministic (:func:`task_span_id`), so any process that knows the
   trace id and a task id can parent spans to the task without asking anyone.
5. **Log capture travels**: a :class:`Carrier` holds the submit side's :class:`LogCapture`
   (``carrier.logs``); the worker session :func:`join_run` starts applies it to the worker's
   loggers and undoes it when it stops, so records logged in tasks land in the run with
   their task's ids. An engine can also ``LogCapture.apply()`` / ``undo()`` it itself.

Everything here is thread-safe, never raises into the engine at run time, and does nothing
(cheaply) when no telemetry runs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace

from otelflow import _global
from otelflow._task_context import enter_task, exit_task
from otelflow.events.stacktrace import format_stacktrace
from otelflow.integrations import _worker
from otelflow.logs.capture import LogCapture, capture_for
from otelflow.scope import AdoptedScope, ScopeRef, adopt_scope, current_scope, enter_adopted_scope, exit_adopted_scope
from otelflow.tasks import error_type_name
from otelflow.tracing import ids

__all__ = [
    "AsyncMeasured",
    "Carrier",
    "LogCapture",
    "Measured",
    "Outcome",
    "Returned",
    "ScopeRef",
    "adopt_scope",
    "carrier",
    "current_scope",
    "flush_worker",
    "ingest",
    "join_run",
    "leave_run",
    "outcome_of",
    "task_context",
    "task_span_id",
]

_log = logging.getLogger("otelflow")
T = TypeVar("T")

OUTCOME_ATTR = "__otelflow_outcome__"
"""Attribute a :class:`Measured` call sets on the exception it lets through."""

_HOST = socket.gethostname()
_SAMPLED = otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED)


# --- outcomes ---------------------------------------------------------------------------------


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What running one task where it ran showed: picklable, JSON-encodable.

    Attributes:
        task_id: The task's id.
        start_ns: When the function started, ns since the epoch, on the worker's clock.
        end_ns: When it returned or raised.
        cpu_time_s: CPU seconds: the thread's for work in the submitting process, the
            process's (and its waited-for children's) in a worker process; None for an
            async function sharing its event loop with other work.
        peak_rss_bytes: Peak resident memory of the worker process during the task (Linux:
            this task's own peak); None for work in the submitting process.
        pid: The process it ran in.
        worker: ``host:pid`` of a worker process, or the thread name in the submitting one.
        error_type: Qualified exception type name if it raised, else None.
        error_message: ``str()`` of the exception (bounded).
        stacktrace: The formatted traceback (bounded to 8 KiB, cut with a marker).
    """

    task_id: str
    start_ns: int
    end_ns: int
    cpu_time_s: float | None = None
    peak_rss_bytes: int | None = None
    pid: int = 0
    worker: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    stacktrace: str | None = None

    @property
    def ok(self) -> bool:
        """True if the function returned (did not raise)."""
        return self.error_type is None

    def __reduce__(self) -> str | tuple[Any, ...]:
        # Positional: one pickled per task, and msgspec's default pickles a dict whose ten
        # field names cost more than the values (≈ 2 µs each way). A subclass: the default.
        if type(self) is not Outcome:
            return super().__reduce__()
        return (_new_outcome, msgspec.structs.astuple(self))


def _new_outcome(
    task_id: str,
    start_ns: int,
    end_ns: int,
    cpu_time_s: float | None,
    peak_rss_bytes: int | None,
    pid: int,
    worker: str | None,
    error_type: str | None,
    error_message: str | None,
    stacktrace: str | None,
) -> Outcome:
    return Outcome(
        task_id=task_id,
        start_ns=start_ns,
        end_ns=end_ns,
        cpu_time_s=cpu_time_s,
        peak_rss_bytes=peak_rss_bytes,
        pid=pid,
        worker=worker,
        error_type=error_type,
        error_message=error_message,
        stacktrace=stacktrace,
    )


class Returned(msgspec.Struct, Generic[T], frozen=True):
    """A :class:`Measured` call's result: the function's ``value`` and its :class:`Outcome`."""

    value: T
    outcome: Outcome

    def __reduce__(self) -> str | tuple[Any, ...]:
        if type(self) is not Returned:
            return super().__reduce__()
        return (Returned, (self.value, self.outcome))


def outcome_of(exc: BaseException) -> Outcome | None:
    """The :class:`Outcome` a :class:`Measured` call attached to ``exc``, or None."""
    out = getattr(exc, OUTCOME_ATTR, None)
    return out if isinstance(out, Outcome) else None


# --- carriers ---------------------------------------------------------------------------------


class Carrier(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a worker needs to join the run: picklable and JSON-encodable.

    Made by :func:`carrier` on the submit side; used by :func:`join_run`,
    :func:`task_context` and :class:`Measured` where the work runs.

    Attributes:
        run_id: The run's id (its directory name).
        session_id: The submitting session's id.
        trace_id: The session's trace id (32 hex digits).
        session_span_id: The session span's id (16 hex digits).
        runs_dir: Absolute runs directory of the submit host, or None (no run directory).
        service_name: ``service.name`` of the submitting session.
        flush_interval: The session's JSONL flush interval (seconds).
        set_global_providers: The session's policy for OTel's global tracer provider.
        parent_pid: The submitting process (work running there needs no worker session).
        traceparent: W3C ``traceparent`` of the task's span (or of the span current where
            the carrier was made), or None.
        scope: The workflow/block scope the work was submitted in, or None.
        join: Start a worker session for user spans, events and logs made inside tasks.
        logs: The log capture in effect on the submit side (:class:`LogCapture`), which the
            worker session applies to the worker's loggers (and undoes when it stops), or
            None.
        trace_per: The session's ``trace_per`` setting: with ``"workflow"``, a task's span is
            in its workflow's trace (``scope``'s), as the submit side records it.
    """

    run_id: str
    session_id: str
    trace_id: str
    session_span_id: str
    runs_dir: str | None = None
    service_name: str | None = None
    flush_interval: float = 0.25
    set_global_providers: str = "auto"
    parent_pid: int = 0
    traceparent: str | None = None
    scope: ScopeRef | None = None
    join: bool = True
    logs: LogCapture | None = None
    trace_per: str = "session"

    def __reduce__(self) -> str | tuple[Any, ...]:
        # As its msgpack bytes, encoded once per carrier and decoded once per worker: a pool
        # pickles the same carrier with every task, and pickling its 13 named fields costs
        # more than the task's own call (≈ 3 µs to pickle, 2 µs to unpickle). A subclass, or
        # a hand-made carrier msgpack cannot carry back as it is: the default.
        blob = _carrier_msgpack(self) if type(self) is Carrier else None
        if blob is None:
            return super().__reduce__()
        return (_carrier_from_msgpack, (blob,))

    def to_dict(self) -> dict[str, Any]:
        """The carrier as a plain JSON-compatible dict."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    @classmethod
    def from_dict(cls, data: object) -> Carrier | None:
        """Back from :meth:`to_dict`; None (logged once) for anything malformed. Never raises."""
        try:
            return msgspec.convert(data, cls)
        except (msgspec.ValidationError, TypeError) as exc:
            _warn_once("carrier", "otelflow ignored a malformed carrier (%s); the task runs unrecorded.", exc)
            return None

    def with_task(self, task_id: str) -> Carrier:
        """This carrier with ``traceparent`` pointing at task ``task_id``'s span."""
        return msgspec.structs.replace(self, traceparent=ids.traceparent(*self._task_span(task_id)))

    def _task_span(self, task_id: str) -> tuple[int, int]:
        """(trace id, span id) of task ``task_id``'s span, as the submit side records it."""
        session_trace = int(self.trace_id, 16)
        span_id = ids.task_span_id(session_trace, task_id)  # keyed by the session's trace always
        wf = self.scope.workflow_id if self.scope is not None else None
        if self.trace_per == "workflow" and wf:
            return ids.workflow_trace_id(session_trace, wf), span_id
        return session_trace, span_id

    def _config(self) -> _worker.WorkerConfig:
        return _worker.WorkerConfig(
            parent_pid=self.parent_pid,
            runs_dir=self.runs_dir,
            run_id=self.run_id,
            trace_id=self.trace_id,
            session_id=self.session_id,
            service_name=self.service_name,
            flush_interval=self.flush_interval,
            set_global_providers=self.set_global_providers,
            session=self.join,
            session_span_id=self.session_span_id,
            log_capture=self.logs,
            trace_per=self.trace_per,
        )


_carrier_encoder = msgspec.msgpack.Encoder()
_carrier_decoder = msgspec.msgpack.Decoder(Carrier)
# id -> (carrier, its msgpack bytes or None); the carrier is held so its id is not reused.
_carrier_blobs: dict[int, tuple[Carrier, bytes | None]] = {}
_BLOB_CACHE = 64  # carriers in use at once: one per scope tasks are submitted in, so few


def _carrier_msgpack(c: Carrier) -> bytes | None:
    """``c`` as msgpack bytes that decode back to an equal carrier; None if they would not
    (a field of the wrong type in a hand-made carrier), so a worker never fails to unpickle."""
    hit = _carrier_blobs.get(id(c))
    if hit is not None and hit[0] is c:
        return hit[1]
    blob: bytes | None
    try:
        blob = _carrier_encoder.encode(c)
        if _carrier_decoder.decode(blob) != c:  # once per carrier: it must come back whole
            blob = None
    except (TypeError, ValueError, msgspec.MsgspecError):
        blob = None
    if len(_carrier_blobs) >= _BLOB_CACHE:
        _carrier_blobs.clear()
    _carrier_blobs[id(c)] = (c, blob)
    return blob


@functools.lru_cache(maxsize=_BLOB_CACHE)
def _carrier_from_msgpack(blob: bytes) -> Carrier:
    """The carrier pickled as ``blob``: one instance per distinct carrier (it is frozen)."""
    return _carrier_decoder.decode(blob)


def carrier(task_id: str | None = None, *, telemetry: Any = None, join: bool = True) -> Carrier | None:
    """Build the :class:`Carrier` for work submitted here (None when no telemetry runs).

    Args:
        task_id: The task the work is; its span becomes the carrier's ``traceparent``.
            Without it, the span current here (if it belongs to the run) is carried.
        telemetry: The session to carry; by default the current one.
        join: Whether workers start a session of their own for spans/events made in tasks.
    """
    tel = telemetry if telemetry is not None else _global.current()
    if tel is None or not tel.active:
        return None
    tp: str | None
    if task_id is not None:
        tp = tel.task_traceparent(task_id)
    else:
        ctx = otel_trace.get_current_span().get_span_context()
        tp = (
            ids.traceparent(ctx.trace_id, ctx.span_id)
            if ctx.is_valid and ctx.trace_id in (tel.trace_id_int, tel.current_trace_id())
            else None
        )
    service = tel.resource.attributes.get("service.name") if tel.resource is not None else None
    return Carrier(
        run_id=tel.run_id,
        session_id=tel.session_id,
        trace_id=tel.trace_id,
        session_span_id=f"{tel.session_span_id:016x}",
        runs_dir=str(tel.run_dir.parent) if tel.run_dir is not None else None,
        service_name=str(service) if service is not None else None,
        flush_interval=tel.settings.flush_interval,
        set_global_providers=tel.settings.set_global_providers,
        parent_pid=os.getpid(),
        traceparent=tp,
        scope=current_scope(),
        join=join,
        logs=capture_for(tel),
        trace_per=tel.settings.trace_per,
    )


def task_span_id(trace_id: str, task_id: str) -> str:
    """The span id (16 hex digits) of task ``task_id`` in the trace ``trace_id`` (32 hex)."""
    return f"{ids.task_span_id(int(trace_id, 16), task_id):016x}"


# --- joining the run from a worker ------------------------------------------------------------


def join_run(carrier: Carrier, *, forward: Callable[[bytes], object] | None = None, export: bool = False) -> Any:
    """Join ``carrier``'s run from this (worker) process; returns its worker ``Telemetry`` or None.

    Starts at most one worker session per process and run; later calls return it. The
    session joins the parent's trace and session: user spans, ``otelflow.emit()`` and
    captured logs made here carry the run's ids. It writes no ``run.json`` and no session
    span, and counts no tasks (the submit side does).

    Args:
        carrier: From :func:`carrier` on the submit side.
        forward: None: write ``worker-<host>-<pid>.jsonl`` into the run directory, which must
            exist here (a shared filesystem); if it does not, nothing is started (logged
            once). A callable: write no file; every flush hands the JSONL lines (bytes,
            newline-terminated) to ``forward`` — send them home and pass them to
            :func:`ingest`. It runs on otelflow's dispatcher thread: keep it short.
        export: Also export this process's spans with its own ``OTEL_*`` exporter settings
            (e.g. ``OTEL_EXPORTER_OTLP_ENDPOINT`` on a remote host); metrics are not exported
            (the submit side counts the tasks). Off by default: the submit side's run
            directory is the record, and ``otelflow replay`` sends it on.

    Returns:
        The worker session, or None when the run writes no run directory, telemetry of
        this process's own is running (it is used instead), or starting failed (logged).
    """
    if not isinstance(carrier, Carrier):
        return None
    sess = _worker.current_session(carrier.run_id)
    if sess is not None:  # joined already (once per process and run): no checks, no I/O
        return sess
    if forward is None:
        if carrier.runs_dir is None or not (Path(carrier.runs_dir) / carrier.run_id).is_dir():
            _warn_once(
                f"nodir:{carrier.run_id}",
                "otelflow: the run directory %s is not reachable from this process; spans and "
                "events made in its tasks are not recorded here. Share the directory, or pass "
                "forward= to send them over the engine's connection.",
                f"{carrier.runs_dir}/{carrier.run_id}",
            )
            return None
    elif carrier.runs_dir is None:
        carrier = msgspec.structs.replace(carrier, runs_dir="<forwarded>")
    return _worker.worker_session(carrier._config(), forward=forward, export=export)


def flush_worker(timeout: float = 5.0, *, if_used: bool = False) -> None:
    """Write (or forward) what this process's worker session holds now. Never raises.

    Args:
        timeout: Seconds to wait for the session's thread.
        if_used: Skip the flush (a round trip to the session's thread, 15-50 µs) when
            nothing was recorded since the last one — what :class:`Measured` does after
            each task; use it after every task of an engine that runs many tiny ones.
    """
    if if_used:
        sess = _worker.current_worker_session()
        if sess is not None:
            _worker.flush_if_used(sess)
        return
    _worker.flush_worker_session(timeout)


def leave_run() -> None:
    """Stop this process's worker session, flushing it (idempotent; also runs at exit)."""
    _worker.stop_worker_session()


@contextlib.contextmanager
def task_context(carrier: Carrier | None, task_id: str | None = None) -> Iterator[None]:
    """Run the body as part of a task: its span is the current OTel span, its scope adopted.

    With ``task_id``, the task's span (derived from the trace id) is current; otherwise the
    carrier's ``traceparent``. Spans made inside become children of it; events and tasks
    made inside carry the carrier's workflow and block ids. ``None`` runs the body as is.
    """
    entered = _enter_task_context(carrier, task_id)
    try:
        yield
    finally:
        _exit_task_context(entered)


class _InTask:
    """What :func:`_enter_task_context` made current, to undo in reverse order."""

    __slots__ = ("otel_token", "scope", "task_token")

    def __init__(self, scope: AdoptedScope, otel_token: object | None, task_token: Any) -> None:
        self.scope = scope
        self.otel_token = otel_token
        self.task_token = task_token


def _enter_task_context(carrier: Carrier | None, task_id: str | None) -> _InTask | None:
    # Plain calls rather than a generator: Measured runs this around every task in a worker.
    if carrier is None:
        return None
    try:
        if task_id is not None:
            parsed: tuple[int, int] | None = carrier._task_span(task_id)
        else:
            parsed = ids.parse_traceparent(carrier.traceparent) if carrier.traceparent else None
    except (ValueError, TypeError, AttributeError):
        parsed = None
    # The scope first, the task span over it: the innermost current span is the task's (so
    # the scope's own span need not be made current under it).
    scope = enter_adopted_scope(carrier.scope, span=parsed is None)
    token = None
    if parsed is not None:
        span = otel_trace.NonRecordingSpan(otel_trace.SpanContext(parsed[0], parsed[1], True, _SAMPLED))
        token = otel_context.attach(otel_trace.set_span_in_context(span))
    task_token = enter_task(task_id) if task_id is not None else None  # logs name their task
    return _InTask(scope, token, task_token)


def _exit_task_context(entered: _InTask | None) -> None:
    if entered is None:
        return
    exit_task(entered.task_token)
    if entered.otel_token is not None:
        with contextlib.suppress(Exception):  # a context switched elsewhere: nothing to undo
            otel_context.detach(entered.otel_token)  # type: ignore[arg-type]
    exit_adopted_scope(entered.scope)


# --- ingesting forwarded lines on the submit side ---------------------------------------------

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_ingest_lock = threading.Lock()
_ingest_fds: dict[tuple[str, str], int] = {}


def ingest(data: bytes, source: str, *, telemetry: Any = None) -> int:
    """Append JSONL lines forwarded from a worker (``join_run(forward=...)``) to the run.

    The lines go to ``<run dir>/<source>.jsonl`` (``source`` made a safe file name, e.g.
    ``worker-host-123``), one file per source, as if the worker had written them itself;
    readers merge them with the rest. Lines that are not JSON objects are dropped and
    counted in ``summary()["dropped"]["ingest_invalid"]``. Thread-safe; never raises.

    Returns:
        The number of lines written.
    """
    tel = telemetry if telemetry is not None else _global.current()
    if tel is None or tel.run_dir is None or not isinstance(data, (bytes, bytearray, memoryview)):
        return 0
    good: list[bytes] = []
    bad = 0
    for line in bytes(data).splitlines():
        if not line.strip():
            continue
        try:
            ok = isinstance(msgspec.json.decode(line), dict)
        except msgspec.DecodeError:
            ok = False
        if ok:
            good.append(line)
        else:
            bad += 1
    if bad:
        tel.count_dropped("ingest_invalid", bad)
    if not good:
        return 0
    name = (_SAFE.sub("_", str(source)).strip("._") or "worker")[:120]
    if not name.endswith(".jsonl"):
        name += ".jsonl"
    if name == "run.json":  # pragma: no cover - cannot happen with the suffix; kept for clarity
        name = "worker.jsonl"
    path = tel.run_dir / name
    payload = b"\n".join(good) + b"\n"
    try:
        with _ingest_lock:
            key = (str(tel.run_dir), name)
            fd = _ingest_fds.get(key)
            if fd is None:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
                if not any(k[0] == key[0] for k in _ingest_fds):  # the run's first file
                    tel.on_stop(functools.partial(_close_ingest_files, tel.run_dir))
                _ingest_fds[key] = fd
            os.write(fd, payload)
    except OSError as exc:
        tel.count_dropped("ingest_failed", len(good))
        _warn_once(f"ingest:{path}", "otelflow could not write forwarded worker lines to %s: %s", path, exc)
        return 0
    return len(good)


def _close_ingest_files(run_dir: Path | None) -> None:
    """Close the files :func:`ingest` opened for ``run_dir`` (a stop hook of its telemetry)."""
    with _ingest_lock:
        for key in [k for k in _ingest_fds if run_dir is None or k[0] == str(run_dir)]:
            with contextlib.suppress(OSError):
                os.close(_ingest_fds.pop(key))


# --- measuring where the task runs ------------------------------------------------------------

_now = time.time_ns


class _Meter:
    """Start/end clock and CPU/RSS use of one call (in- or out-of-process)."""

    __slots__ = ("in_process", "pid", "session", "start", "thread_cpu", "usage")

    def __init__(self, carrier: Carrier | None, cpu: bool) -> None:
        self.pid = pid = os.getpid()
        self.in_process = carrier is None or carrier.parent_pid in (0, pid)
        self.session = None
        if carrier is not None and carrier.join and not self.in_process:
            self.session = join_run(carrier)
        # Reset peak RSS only in a worker process: in the submitting process that would
        # reset the host application's high-water mark.
        self.usage = None if self.in_process else _worker.ProcessUsage(reset=True)
        self.thread_cpu = time.thread_time() if (self.in_process and cpu) else None
        self.start = _now()

    def outcome(self, task_id: str, exc: BaseException | None) -> Outcome:
        end = _now()
        cpu: float | None = None
        rss: int | None = None
        if self.usage is not None:
            cpu, rss = self.usage.end()
        elif self.thread_cpu is not None:
            cpu = round(time.thread_time() - self.thread_cpu, 6)
        worker = threading.current_thread().name if self.in_process else f"{_HOST}:{self.pid}"
        if self.session is not None:
            _worker.flush_if_used(self.session)
        if exc is None:
            return Outcome(
                task_id=task_id, start_ns=self.start, end_ns=end, cpu_time_s=cpu,
                peak_rss_bytes=rss, pid=self.pid, worker=worker,
            )  # fmt: skip
        try:
            message = str(exc)[:2000]
        except Exception:  # noqa: BLE001 - a broken __str__
            message = "<unprintable>"
        return Outcome(
            task_id=task_id, start_ns=self.start, end_ns=end, cpu_time_s=cpu, peak_rss_bytes=rss,
            pid=self.pid, worker=worker, error_type=error_type_name(exc), error_message=message,
            stacktrace=format_stacktrace(exc),
        )  # fmt: skip


def _attach_outcome(exc: BaseException, outcome: Outcome) -> None:
    with contextlib.suppress(Exception):  # an exception type without a __dict__
        setattr(exc, OUTCOME_ATTR, outcome)


class Measured:
    """Run ``fn`` as task ``task_id`` and measure it where it runs. Picklable by reference.

    Calling it returns :class:`Returned` (``.value``, ``.outcome``). If ``fn`` raises, the
    exception propagates unchanged, with the :class:`Outcome` attached (:func:`outcome_of`).
    Record either with :meth:`otelflow.TaskTracker.record_outcome`.

    With a ``carrier``, the call runs inside :func:`task_context` (the task's span current,
    its scope adopted), and in a worker process first joins the run (:func:`join_run`, its
    own file in a shared run directory) and flushes what the task recorded before returning.

    Args:
        fn: The task's function (must be picklable to cross processes).
        task_id: The task's id.
        carrier: From :func:`carrier`, or None to only measure.
    """

    __slots__ = ("carrier", "fn", "task_id")

    def __init__(self, fn: Callable[..., Any], task_id: str, carrier: Carrier | None = None) -> None:
        self.fn = fn
        self.task_id = task_id
        self.carrier = carrier

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (type(self), (self.fn, self.task_id, self.carrier))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.fn!r}, {self.task_id!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Returned[Any]:
        meter = _Meter(self.carrier, cpu=True)
        entered = _enter_task_context(self.carrier, self.task_id)
        try:
            value = self.fn(*args, **kwargs)
        except BaseException as exc:
            _attach_outcome(exc, meter.outcome(self.task_id, exc))
            raise
        finally:
            _exit_task_context(entered)
        return Returned(value, meter.outcome(self.task_id, None))


class AsyncMeasured(Measured):
    """:class:`Measured` for async functions (and sync ones): ``await am(*args)``.

    In the submitting process its CPU time is None (the event loop runs other work in
    between); in a worker process it is the process's, as for :class:`Measured`.
    """

    __slots__ = ()

    async def __call__(self, *args: Any, **kwargs: Any) -> Returned[Any]:  # type: ignore[override]
        meter = _Meter(self.carrier, cpu=False)
        with task_context(self.carrier, self.task_id if self.carrier is not None else None):
            try:
                value = self.fn(*args, **kwargs)
                if isinstance(value, Awaitable):
                    value = await value
            except BaseException as exc:
                _attach_outcome(exc, meter.outcome(self.task_id, exc))
                raise
        return Returned(value, meter.outcome(self.task_id, None))


_warned: set[str] = set()


def _warn_once(key: str, msg: str, *args: object) -> None:
    if key in _warned:
        return
    _warned.add(key)
    _log.warning(msg, *args)
