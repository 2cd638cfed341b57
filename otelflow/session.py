"""``Telemetry``: one observability session — providers, bus, sinks, monitor, run directory.

``start_telemetry()`` creates one and makes it the process's current telemetry; a
``Telemetry`` object also works on its own (tests, libraries). Its life::

    Telemetry(...).start()   # ids, run directory, providers, dispatcher, monitor
    ... emit() / scopes / trackers ...
    stop()                   # drain every accepted event, close spans, final metrics,
                             # flush exporters, write run.json; returns summary()

``stop()`` is idempotent; a repeat returns the same summary. With telemetry disabled
(``OTEL_SDK_DISABLED=true`` or ``OTELFLOW_TELEMETRY=0``) every method is a cheap no-op.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import random
import reprlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import SpanContext, TraceFlags

from otelflow import _global, _otel_compat, validate
from otelflow._version import __version__
from otelflow._warn import warn_visibly
from otelflow.bus.dispatcher import Call, Dispatcher
from otelflow.bus.queue import EventBus
from otelflow.bus.subscribers import Subscriber
from otelflow.config.settings import Settings, load_settings
from otelflow.errors import ConfigError, EventError
from otelflow.events.model import Event, SessionEnded, SessionStarted, new_event_id, now_ns
from otelflow.events.registry import make_event
from otelflow.metrics.recorder import MetricRecorder
from otelflow.providers import build_providers, make_resource, sample_ratio
from otelflow.redact import redact_argv
from otelflow.run_summary import Summary, build_summary, dropped_counts
from otelflow.runinfo import new_run_id, versions, write_run_json
from otelflow.scope import active_scope
from otelflow.sinks.exporters import BuiltExporters, build_exporters
from otelflow.sinks.jsonl import JsonlWriter, run_file_name
from otelflow.tracing import ids

_log = logging.getLogger("otelflow")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)

__all__ = ["Telemetry"]


class Telemetry:
    """One telemetry session. See :func:`otelflow.start_telemetry` for the arguments."""

    def __init__(
        self,
        *,
        checkpoint_path: str | os.PathLike[str] | None = None,
        resource_poll_interval: float | None = None,
        checkpoint_interval: float | None = None,
        span_processors: Sequence[SpanProcessor] = (),
        metric_readers: Sequence[MetricReader] = (),
        resource: Resource | None = None,
        service_name: str | None = None,
        prometheus_port: int | None = None,
        run_id: str | None = None,
        role: str = "main",
        environ: dict[str, str] | None = None,
        trace_id: str | int | None = None,
        session_id: str | None = None,
        session_span_id: str | int | None = None,
        forward: Callable[[bytes], object] | None = None,
        name: str | None = None,
        **options: Any,
    ) -> None:
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"name= must be a non-empty str (the session span's name), not {name!r}.")
        self._name = name.strip() if name is not None else None
        self.settings: Settings = load_settings(
            environ=environ,
            checkpoint_path=checkpoint_path,
            resource_poll_interval=resource_poll_interval,
            checkpoint_interval=checkpoint_interval,
            service_name=service_name,
            prometheus_port=prometheus_port,
            run_id=run_id,
            **options,
        )
        if resource is not None and not isinstance(resource, Resource):
            raise ConfigError(
                f"resource= must be an opentelemetry.sdk.resources.Resource, not {type(resource).__name__}."
            )
        for proc in span_processors:
            if not hasattr(proc, "on_end"):
                raise ConfigError(f"span_processors= items must be OTel SpanProcessors; got {proc!r}.")
        for reader in metric_readers:
            if not isinstance(reader, MetricReader):
                raise ConfigError(f"metric_readers= items must be OTel MetricReaders; got {reader!r}.")
        self._user_resource = resource
        self._user_processors = tuple(span_processors)
        self._user_readers = tuple(metric_readers)
        self._role = role
        # A worker with no shared run directory hands its JSONL lines to this callable.
        self._forward = forward
        self._state = "new"
        self._state_lock = threading.Lock()
        self._final_summary: Summary | None = None
        self._stopped = threading.Event()  # set when stop() has finished
        # A worker (role != "main") joins its parent's session: same trace, session and
        # session span, its own JSONL file, and no session span, events or run.json of its own.
        self.session_id = session_id or f"s-{random.getrandbits(48):012x}"
        self.trace_id_int: int = _as_id(trace_id, "trace_id", 32) or ids.new_trace_id()
        #: The W3C trace id, 32 lower-case hex digits: what trace viewers show and search.
        self.trace_id: str = f"{self.trace_id_int:032x}"
        self.session_span_id = _as_id(session_span_id, "session_span_id", 16) or ids.new_span_id()
        self._metric_readers: list[MetricReader] = []
        self.node = socket.gethostname()
        self.run_id = self.settings.run_id or new_run_id()
        self.run_dir: Path | None = None
        self.start_time = 0
        self.end_time: int | None = None
        self._invalid_emits = 0
        self._extra_drops: dict[str, int] = {}
        self._stop_hooks: list[Callable[[], object]] = []
        self._gone_sub_drops = 0  # losses of subscribers removed with unsubscribe()
        self._gone_sub_errors = 0
        self._warned_emit: set[str] = set()
        self._scope_spans: dict[str, tuple[int, int]] = {}
        self.bus: EventBus | None = None
        self._dispatcher: Dispatcher | None = None
        self._jsonl: JsonlWriter | None = None
        self._monitor: Any = None
        self._log_handler: Any = None
        self._captures: list[Any] = []  # capture_logging() handles bound to this session
        self._log_export: Any = None
        self._log_drops = 0
        self._logs_captured = 0
        self._log_drop_lock = threading.Lock()
        self.live: Any = None
        """The live view's server (``live_port=``), or None."""
        self._exporters = BuiltExporters()
        self.tracer_provider: TracerProvider | None = None
        self.meter_provider: MeterProvider | None = None
        self.resource: Resource | None = None
        self._recorder: MetricRecorder | None = None
        self._atexit_registered = False
        self._signals: Any = None  # a SignalFinalizer with handle_signals=True
        self.bus_put: Callable[[Any], bool] = _noop_put

    # -- state --------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True between a successful ``start()`` and ``stop()`` (False when disabled)."""
        return self._state == "running"

    @property
    def is_main(self) -> bool:
        """False for a worker session that joined its parent's (``role != "main"``)."""
        return self._role == "main"

    @property
    def enabled(self) -> bool:
        """False when telemetry is switched off by configuration."""
        return self.settings.enabled

    # -- start --------------------------------------------------------------------------------

    def start(self) -> Telemetry:
        """Start the session: run directory, providers, dispatcher, monitor.

        Returns ``self``. Starting twice is a no-op. Raises :class:`ConfigError` if the run
        directory cannot be created or the Prometheus port cannot be bound.
        """
        with self._state_lock:
            if self._state != "new":
                return self
            if not self.settings.enabled:
                self._state = "disabled"
                _global.install(self)
                return self
            self._start_locked()
            self._state = "running"
        _global.install(self)
        return self

    def _start_locked(self) -> None:
        s = self.settings
        self.start_time = now_ns()
        if s.jsonl and self._forward is None:
            # Absolute: a later os.chdir() must not split the run (workers, run.json) in two.
            self.run_dir = Path(s.runs_dir).absolute() / self.run_id
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"Cannot create the run directory {self.run_dir}: {exc.strerror or exc}; set "
                    "checkpoint_path= or OTELFLOW_RUNS_DIR to a writable directory."
                ) from exc
        self.resource = make_resource(s, self.run_id, self.session_id, self._user_resource)
        self._exporters = build_exporters(s)
        if s.live_port is not None and self.is_main:
            # Bound now, before anything else is opened: a port in use fails start() cleanly.
            from otelflow.live.server import LiveServer

            try:
                self.live = LiveServer(None, s.live_host, s.live_port, title=f"otelflow · {self.run_id}")
            except ConfigError:
                self._exporters.close()
                raise
        self._recorder = recorder = MetricRecorder(self.start_time, self.node)
        self.bus = bus = EventBus(s.queue_size, s.queue_full)
        self.bus_put = bus.put
        if self._forward is not None:
            self._jsonl = JsonlWriter(None, s.flush_interval, sink=self._forward)
        elif self.run_dir is not None:
            self._jsonl = JsonlWriter(
                self.run_dir / run_file_name(self._role, self.node, os.getpid(), s.jsonl_compression),
                s.flush_interval,
                compression=s.jsonl_compression,
            )
        providers = build_providers(
            s,
            self.resource,
            recorder,
            self._exporters,
            user_processors=self._user_processors,
            user_readers=self._user_readers,
            put=bus.put if self._jsonl is not None else None,
            put_internal=bus.put_internal if self._jsonl is not None else None,
            snapshots=self.is_main,
        )
        self.tracer_provider = providers.tracer_provider
        self.meter_provider = providers.meter_provider
        self._metric_readers = providers.metric_readers
        export_processors = providers.export_processors
        from otelflow.tracing.tree import TraceTree

        self._tree = TraceTree(
            trace_id=self.trace_id_int,
            session_span_id=self.session_span_id,
            session_id=self.session_id,
            resource=self.resource,
            recorder=recorder,
            jsonl=self._jsonl,
            processors=export_processors,
            scope_spans=self._scope_spans,
            sample_ratio=sample_ratio(s),
            version=__version__,
            wait_spans=s.wait_spans,
            session_name=self._session_name(),
            run_id=self.run_id,
            trace_per_workflow=s.trace_per == "workflow",
        )
        self._dispatcher = Dispatcher(
            bus, self._tree, recorder, self._jsonl, idle_wait=min(0.05, s.flush_interval / 2)
        )
        recorder.dropped_fn = lambda: bus.dropped
        recorder.depth_fn = lambda: len(bus)
        recorder.throttled_fn = lambda: bus.throttled_ns / 1e9
        # Subscribed before the dispatcher starts, so that they see SessionStarted too.
        if s.logs_exporters:
            from otelflow.logs.export import LogExport

            self._log_export = LogExport.start(self, s)
        if self.live is not None:
            self.live.watch(self)
        self._dispatcher.start()
        self._write_run_json(status="running")
        if self.is_main:
            bus.put_internal(
                SessionStarted(
                    event_id=new_event_id(),
                    event_time=self.start_time,
                    emit_time=now_ns(),
                    session_id=self.session_id,
                    run_id=self.run_id,
                    service_name=self.resource.attributes.get("service.name"),  # type: ignore[arg-type]
                )
            )
        if s.resource_poll_interval > 0:
            self._start_monitor(s.resource_poll_interval)
        loggers = tuple(dict.fromkeys((("",) if s.capture_logs else ()) + s.capture_loggers))
        if loggers:
            from otelflow.logs.capture import LogCapture

            self._log_handler = LogCapture(loggers, s.log_level).apply(self)
        from otelflow import _otel_globals

        _otel_globals.maybe_install(s.set_global_providers)
        if not self._atexit_registered:
            atexit.register(self._atexit)
            self._atexit_registered = True
        if s.handle_signals and self.is_main:
            from otelflow.signals import SignalFinalizer

            finalizer = SignalFinalizer(self)
            if finalizer.install():
                self._signals = finalizer

    def _start_monitor(self, interval: float) -> None:
        try:
            from otelflow.monitors import ResourceMonitor
        except ImportError as exc:  # pragma: no cover - the monitor ships with the package
            _log.warning("otelflow resource monitor unavailable: %s", exc)
            return
        self._monitor = ResourceMonitor(
            interval, self._internal_put, session_id=self.session_id, node=self.node
        )
        self._monitor.start()

    def _internal_put(self, item: Any) -> Any:
        bus = self.bus
        return bus.put_internal(item) if bus is not None and self._state in ("running", "stopping") else False

    # -- producer API (any thread) ------------------------------------------------------------

    def emit(self, event: Event | str, /, **fields: Any) -> bool:
        """Put an event on the bus. Never raises; returns False if it was not accepted.

        Args:
            event: An event object, or a registered event name (then ``fields`` make it).
            **fields: Fields for ``make_event`` when ``event`` is a name.
        """
        if self._state != "running":
            return False
        try:
            if isinstance(event, str):
                event = make_event(event, **fields)
            elif not isinstance(event, Event):
                raise EventError(
                    f"emit() takes an otelflow event or event name, not {type(event).__name__}; "
                    "create events with otelflow.make_event() or an event class."
                )
            # Events built directly from their class get what make_event() would stamp.
            now = now_ns()
            setf = msgspec.structs.force_setattr
            if event.emit_time == 0:
                setf(event, "emit_time", now)
            if event.event_id == 0:
                setf(event, "event_id", new_event_id())
            if event.event_time == 0:
                setf(event, "event_time", now)
            if event.session_id is None:
                setf(event, "session_id", self.session_id)
                if event.workflow_id is None and event.block_id is None:
                    scope = active_scope()
                    if scope is not None:
                        setf(event, "workflow_id", scope.workflow_id)
                        setf(event, "block_id", scope.block_id)
            # A value of the wrong type would be written unchecked (or break the reader):
            # refuse the event here, where the count and the warning can name the field.
            why = validate.check_event(event)
            if why is not None:
                raise EventError(
                    f"{event.event_name} was not accepted: {why}. Give each field a value "
                    "of its declared type (finite numbers, text, plain lists and dicts)"
                )
            return self.bus_put(event)
        except Exception as exc:  # noqa: BLE001 - emit() never raises into user code
            self._invalid_emits += 1
            key = f"{type(exc).__name__}:{exc}"[:200]
            if key not in self._warned_emit and len(self._warned_emit) < 50:
                self._warned_emit.add(key)
                warn_visibly(
                    _log,
                    "otelflow.emit() ignored an event (counted in summary()['dropped']"
                    "['invalid_emits']): %s",
                    validate.clean_text(exc, 1000),
                )
            return False

    def scope_started(self, scope: Any, ev: Event) -> None:
        """Record that ``scope`` (a :class:`otelflow.scope.Scope`) was entered (called by scopes)."""
        parent = scope.parent
        self._scope_spans[scope.id] = (
            scope.span_id,
            parent.span_id if parent is not None else self.session_span_id,
        )
        self.bus_put(ev)

    def subscribe(
        self,
        callback: Callable[[Event], Any],
        event_types: type[Event] | Sequence[type[Event]] | None = None,
    ) -> Subscriber:
        """Deliver events to ``callback`` on its own thread (or its loop, if async).

        Args:
            callback: ``callback(event)`` or ``async def callback(event)``.
            event_types: Only these event classes (and subclasses); default all.

        Returns:
            A handle for :meth:`unsubscribe`.
        """
        if isinstance(event_types, type):
            event_types = (event_types,)
        types = tuple(event_types) if event_types else None
        if types:
            for t in types:
                if not (isinstance(t, type) and issubclass(t, Event)):
                    raise ConfigError(f"subscribe(event_types=...) takes event classes, not {t!r}.")
        sub = Subscriber(callback, types)
        if self._dispatcher is not None and self._state == "running":
            self._dispatcher.add_subscriber(sub)
        else:
            sub.stop(time.monotonic())
        return sub

    def add_subscriber(self, sub: Subscriber) -> None:
        """Add a ready-made :class:`~otelflow.bus.subscribers.Subscriber` (the log exporter, the
        live view), also while starting, before the first event. Users call :meth:`subscribe`."""
        if self._dispatcher is not None:
            self._dispatcher.add_subscriber(sub)

    def unsubscribe(self, subscriber: Subscriber) -> bool:
        """Stop delivering to ``subscriber`` (its queued events are still delivered)."""
        if self._dispatcher is None:
            return False
        found = self._dispatcher.remove_subscriber(subscriber)
        if found:
            subscriber.stop(time.monotonic() + 5.0)
            # Its losses stay counted in summary() after it is gone.
            with self._state_lock:
                self._gone_sub_drops += subscriber.dropped
                self._gone_sub_errors += subscriber.errors
        return found

    # -- ids and context ---------------------------------------------------------------------

    def _session_name(self) -> str:
        """The session span's name: ``name=``, else ``session <service> <run id>``."""
        if self._name:
            return self._name
        service = self.resource.attributes.get("service.name") if self.resource is not None else None
        return f"session {service or 'otelflow'} {self.run_id}"

    def span_context(self, span_id: int) -> SpanContext:
        """An OTel ``SpanContext`` for ``span_id`` in the current trace: this session's, or
        with a trace per workflow (``OTELFLOW_TRACE_PER=workflow``) the current workflow's."""
        return SpanContext(self._current_trace(), span_id, False, _SAMPLED)

    def current_trace_id(self) -> int:
        """The trace a task created now is in: this session's, or with a trace per workflow
        the current workflow's."""
        return self._current_trace()

    def _current_trace(self) -> int:
        if self.settings.trace_per != "workflow":
            return self.trace_id_int
        scope = active_scope()
        wf = scope.workflow_id if scope is not None else None
        return ids.workflow_trace_id(self.trace_id_int, wf) if wf else self.trace_id_int

    def task_span_id(self, task_id: str) -> int:
        """The span id the task ``task_id`` has in this session (deterministic)."""
        return ids.task_span_id(self.trace_id_int, task_id)

    def task_traceparent(self, task_id: str) -> str:
        """W3C ``traceparent`` for the task's span, to carry into a worker."""
        return ids.traceparent(self._current_trace(), self.task_span_id(task_id))

    def tracer(self, name: str = "otelflow.user") -> Any:
        """A tracer on this session's provider; its spans go to every span sink."""
        if self.tracer_provider is None:
            from opentelemetry.trace import NoOpTracer

            return NoOpTracer()
        return self.tracer_provider.get_tracer(name)

    # -- flush, summary, stop ----------------------------------------------------------------

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every event emitted so far is processed and written. Thread-safe."""
        if self._state != "running" or self._dispatcher is None:
            return False
        return self._call(None, timeout) is not _TIMEOUT

    def _call(self, fn: Callable[[], Any] | None, timeout: float | None) -> Any:
        assert self.bus is not None and self._dispatcher is not None
        call = Call(fn)
        self.bus.put_call(call)  # bypasses the bound, never dropped
        deadline = None if timeout is None else time.monotonic() + timeout
        while not call.done.wait(0.2):
            if not self._dispatcher.alive:
                return _TIMEOUT
            if deadline is not None and time.monotonic() > deadline:
                return _TIMEOUT
        if call.error is not None:
            raise call.error
        return call.result

    def summary(self) -> Summary:
        """Counts, durations, waits, per-workflow totals, last resources, and losses.

        Computed from running aggregates. During the run it is a live view; after
        ``stop()`` it is final (and also written to ``run.json``).
        """
        if self._final_summary is not None:
            if self.bus is not None and self.bus.discard_leftover():
                self._final_summary["dropped"]["events"] = self.bus.dropped
            return self._final_summary
        return self._build_summary()

    def _build_summary(self) -> Summary:
        return build_summary(
            {
                "run_id": self.run_id,
                "run_dir": str(self.run_dir) if self.run_dir else None,
                "session_id": self.session_id,
                "trace_id": self.trace_id,
                "enabled": self.settings.enabled,
            },
            self._recorder,
            self.start_time,
            self.end_time,
            self._dropped,
            self._monitor,
        )

    def _dropped(self) -> dict[str, Any]:
        counted = {
            "invalid_emits": self._invalid_emits,
            "gone_subscriber_events": self._gone_sub_drops,
            "gone_subscriber_errors": self._gone_sub_errors,
            "log_records": self._log_drops,
            # events live-view clients missed because they read slower than the ring turned
            "live_view_missed": self.live.hub.dropped_for_clients if self.live is not None else 0,
            **self._extra_drops,
        }
        return dropped_counts(
            bus=self.bus,
            dispatcher=self._dispatcher,
            jsonl=self._jsonl,
            tree=getattr(self, "_tree", None),
            counted=counted,
            export_failures=self._export_failures(),
            export_failures_by_signal=self._exporters.failures_by_signal(),
        )

    def count_log_drop(self) -> None:
        """A captured log record was not accepted (flood or full bus): count it."""
        with self._log_drop_lock:
            self._log_drops += 1
            first = self._log_drops == 1
        if first:
            _log.warning(
                "otelflow is dropping log records: they arrive faster than the run writes them "
                "(the bus is half full). Lifecycle events are kept; dropped log records are "
                "counted in summary()['dropped']['log_records']."
            )

    def on_stop(self, hook: Callable[[], object]) -> None:
        """Run ``hook()`` once when this telemetry stops, after the run file is closed and
        before the final summary (for integrations that hold files or connections of the run).
        An error in it is logged; ``stop()`` goes on."""
        with self._state_lock:
            self._stop_hooks.append(hook)

    def count_dropped(self, what: str, n: int = 1) -> None:
        """Count ``n`` records an integration could not record, under ``summary()["dropped"][what]``.

        For integrations: what they had to drop (a malformed message from a worker, a
        forwarded batch that could not be written) stays counted and visible.
        """
        with self._state_lock:
            self._extra_drops[what] = self._extra_drops.get(what, 0) + n

    def invalid_argument(self, what: str, value: object) -> None:
        """Count a tracker argument that had to be fixed or left out; warn once per argument.

        Counted under ``summary()["dropped"]["invalid_arguments"]``.
        """
        self.count_dropped("invalid_arguments")
        key = f"arg:{what}"
        if key in self._warned_emit:
            return
        self._warned_emit.add(key)
        try:
            shown = reprlib.repr(value)
        except Exception:  # noqa: BLE001 - a broken __repr__
            shown = f"<{type(value).__qualname__}>"
        warn_visibly(
            _log,
            "otelflow: a tracker call got %s=%s; %s. Counted in "
            "summary()['dropped']['invalid_arguments'] (further ones are not warned about).",
            what,
            validate.clean_text(shown, 200),
            _ARG_FIX.get(what, "it was recorded as its text"),
        )

    def _export_failures(self) -> int:
        logs = self._log_export.failures() if self._log_export is not None else 0
        return self._exporters.failures() + logs

    @property
    def prometheus_address(self) -> tuple[str, int] | None:
        """``(host, port)`` the Prometheus endpoint is bound to (the real port if 0 was asked)."""
        return self._exporters.prometheus_address

    def stop(self, timeout: float = 30.0) -> Summary:
        """Drain every accepted event to every sink, close spans, flush exporters.

        Idempotent: a second call returns the same summary. Safe from any thread; in a
        running event loop prefer ``await telemetry.astop()``, which runs this in a thread.

        Args:
            timeout: Seconds allowed for exporters (OTLP, subscribers) to finish. Draining
                the JSONL run directory is never cut short by it.

        Returns:
            The final :meth:`summary`.
        """
        with self._state_lock:
            state = self._state
            if state in ("new", "disabled"):
                self._state = "stopped"
                _global.uninstall(self)
                self._final_summary = self._build_summary()
                self._stopped.set()
                return self._final_summary
            if state == "running":
                self._state = "stopping"
        if state != "running":  # stopped, or another thread is stopping it: wait for that
            self._stopped.wait(timeout)
            return self.summary()
        deadline = time.monotonic() + timeout
        try:
            self._stop_running(deadline)
        finally:
            self._state = "stopped"
            _global.uninstall(self)
            if self._atexit_registered:
                atexit.unregister(self._atexit)
                self._atexit_registered = False
            if self._signals is not None:
                self._signals.uninstall()
            self._stopped.set()
        return self.summary()

    def _stage(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one stop() stage; a failure is logged and the remaining stages still run."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - stop() must always close the run
            warn_visibly(_log, "otelflow: %s failed during stop(): %s: %s", what, type(exc).__name__, exc)
            return None

    def _stop_running(self, deadline: float) -> None:
        assert self.bus is not None and self._dispatcher is not None
        bus, dispatcher = self.bus, self._dispatcher
        if self._monitor is not None:
            self._stage("the resource monitor", self._monitor.stop)
        if self._log_handler is not None:
            self._stage("removing the log capture", self._log_handler.undo)
        for applied in self._captures:
            self._stage("removing a log capture", applied.undo)
        end = now_ns()
        self.end_time = end
        if self.is_main:
            bus.put_internal(
                SessionEnded(event_id=new_event_id(), event_time=end, emit_time=end, session_id=self.session_id)
            )
        # 1. everything accepted so far, then close open tasks/scopes and the session span.
        open_tasks = self._stage(
            "closing open spans",
            lambda: self._call(lambda: self._tree.close_all(end, session_span=self.is_main), None),
        )
        if open_tasks and open_tasks is not _TIMEOUT:
            _log.warning(
                "otelflow: %d task(s) were still open at stop(); their spans were closed and "
                "marked incomplete.",
                open_tasks,
            )
        # 2. final metrics (the JSONL reader's snapshot comes back through the bus).
        # Metrics and spans share one bounded OTLP flush window (a dead collector: none).
        self._stage("starting the exporters' shutdown", lambda: self._exporters.begin_shutdown(deadline))
        remaining = max(1.0, deadline - time.monotonic())
        if self.meter_provider is not None:
            mp = self.meter_provider
            self._stage("the metric shutdown", lambda: mp.shutdown(timeout_millis=remaining * 1000))
        # 3. exporters (OTLP batch processors flush here, bounded by their timeouts).
        if self.tracer_provider is not None:
            self._stage("the span exporters' shutdown", self.tracer_provider.shutdown)
        self._stage("closing the Prometheus endpoint", self._exporters.close)
        if self._log_export is not None:
            self._stage("the log exporters' shutdown", lambda: self._log_export.shutdown(deadline))
        # 4. last drain; then refuse new items and end the dispatcher.
        self._stage("the final drain", lambda: self._call(None, None))
        bus.close()
        dispatcher.exit(None)
        self._count_leftover()
        for sub in dispatcher.subscribers:
            self._stage("a subscriber's stop", functools.partial(_stop_subscriber, sub, deadline))
        if self._jsonl is not None:
            self._stage("closing the run file", self._jsonl.close)
        if self.live is not None:
            grace = min(2.0, max(0.1, deadline - time.monotonic()))
            self._stage("closing the live view", lambda: self.live.close(grace))
        for hook in self._stop_hooks:
            self._stage("a stop hook", hook)
        from otelflow import _otel_globals

        _otel_globals.session_stopped(self)
        self._final_summary = self._build_summary()
        self._write_run_json(status="completed", summary=self._final_summary)

    def _count_leftover(self) -> None:
        """Items that raced in after the bus closed: counted as dropped, never silently lost."""
        if self.bus is not None:
            self.bus.discard_leftover()

    async def astop(self, timeout: float = 30.0) -> Summary:
        """``stop()`` without blocking the running event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, self.stop, timeout)

    def _atexit(self) -> None:
        if self._state == "running":
            try:
                self.stop(timeout=5.0)
            except Exception:  # noqa: BLE001 - interpreter is exiting
                pass

    def _forked(self) -> None:
        """Called in a forked child: this copy must never write or wait on parent threads."""
        self._state = "stopped"
        self._jsonl = None
        self.bus_put = _noop_put
        self._atexit_registered = False
        if self.bus is not None:  # spans ended on inherited tracers must not fill a dead bus
            self.bus.reset_after_fork()
        # The OTel SDK restarts every PeriodicExportingMetricReader's thread in a forked
        # child (its own at-fork hook runs after ours); it would export the parent's
        # metrics again from every worker. Make that thread end at once, collecting nothing.
        for reader in self._metric_readers:
            if isinstance(reader, PeriodicExportingMetricReader):
                _otel_compat.disarm_periodic_reader(reader)

    # -- run.json -----------------------------------------------------------------------------

    def _write_run_json(self, status: str, summary: Summary | None = None) -> None:
        if self.run_dir is None or not self.is_main:  # run.json is the main process's
            return
        meta = {
            "run_id": self.run_id,
            "session_id": self.session_id,
            "service_name": self.resource.attributes.get("service.name") if self.resource else None,
            # The exact resource the live exporters sent: `otelflow replay` sends it unchanged.
            "resource": dict(self.resource.attributes) if self.resource else None,
            "trace_id": self.trace_id,
            "session_span_id": f"{self.session_span_id:016x}",
            "start_time": self.start_time,
            "end_time": self.end_time,
            "status": status,
            "host": self.node,
            "pid": os.getpid(),
            "argv": redact_argv(sys.argv),
            "versions": versions(),
            "config": self.settings.redacted(),
            "summary": summary,
        }
        problems = self._problems()
        if problems:
            meta["problems"] = problems
        write_run_json(self.run_dir, meta)

    def _problems(self) -> list[str]:
        """What went wrong writing the run, for ``run.json`` (and so for the report)."""
        j = self._jsonl
        if j is None or not (j.lines_lost or j.write_errors):
            return []
        cause = getattr(j, "last_error", None) or "write errors"
        if "No space" in cause or "ENOSPC" in cause:
            return [f"disk full: {j.lines_lost} line(s) lost from {j.path.name}"]
        return [f"{cause}: {j.lines_lost} line(s) lost from {j.path.name}"]

    # -- context managers ---------------------------------------------------------------------

    def __enter__(self) -> Telemetry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Telemetry:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    def __repr__(self) -> str:
        return f"<Telemetry run={self.run_id} state={self._state}>"


_TIMEOUT = object()


_ARG_FIX = {
    "task_id": "task ids are strings (a step for task id None is not recorded), so it was recorded as its text",
    "name": "task names are strings, so it was recorded as its text",
    "event_time": "event_time is an int of ns since the epoch (time.time_ns()), so 'now' was used",
    "attributes": "attributes map str to str/int/float/bool, so other entries were recorded as text",
    "cpu_time_s": "cpu_time_s is a number of seconds >= 0, so it was left out",
    "peak_rss_bytes": "peak_rss_bytes is an int >= 0, so it was left out",
    "worker": "worker is a string, so it was recorded as its text",
    "pid": "pid is an int >= 0, so it was left out",
}


def _as_id(value: str | int | None, name: str, digits: int) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        parsed = int(value, 16)
    except ValueError:
        parsed = 0
    if len(value) != digits or not parsed:
        raise ConfigError(f"{name}={value!r} is not valid: expected {digits} hex digits, not all zero.")
    return parsed


def _stop_subscriber(sub: Subscriber, deadline: float) -> None:
    sub.stop(max(deadline, time.monotonic() + 1.0))


def _noop_put(item: Any) -> bool:
    return False
