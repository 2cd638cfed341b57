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
import logging
import os
import platform
import random
import reprlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanContext, TraceFlags

from otelflow import _global, validate
from otelflow._version import __version__
from otelflow._warn import warn_visibly
from otelflow.bus.dispatcher import Call, Dispatcher
from otelflow.bus.queue import EventBus
from otelflow.bus.subscribers import Subscriber
from otelflow.config.settings import Settings, load_settings
from otelflow.errors import ConfigError, EventError
from otelflow.events.model import Event, SessionEnded, SessionStarted, new_event_id, now_ns
from otelflow.events.registry import make_event
from otelflow.metrics import bridge
from otelflow.metrics.instruments import METER_NAME
from otelflow.metrics.recorder import MetricRecorder
from otelflow.redact import redact_argv
from otelflow.scope import active_scope
from otelflow.sinks.exporters import BuiltExporters, build_exporters
from otelflow.sinks.jsonl import JsonlMetricExporter, JsonlSpanProcessor, JsonlWriter, run_file_name
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
        **options: Any,
    ) -> None:
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
        self._final_summary: dict[str, Any] | None = None
        self._stopped = threading.Event()  # set when stop() has finished
        # A worker (role != "main") joins its parent's session: same trace, session and
        # session span, its own JSONL file, and no session span, events or run.json of its own.
        self.session_id = session_id or f"s-{random.getrandbits(48):012x}"
        self.trace_id = _as_id(trace_id, "trace_id", 32) or ids.new_trace_id()
        self.session_span_id = _as_id(session_span_id, "session_span_id", 16) or ids.new_span_id()
        self._metric_readers: list[MetricReader] = []
        self.node = socket.gethostname()
        self.run_id = self.settings.run_id or _new_run_id()
        self.run_dir: Path | None = None
        self.start_time = 0
        self.end_time: int | None = None
        self._invalid_emits = 0
        self._extra_drops: dict[str, int] = {}
        self._warned_emit: set[str] = set()
        self._scope_spans: dict[str, tuple[int, int]] = {}
        self.bus: EventBus | None = None
        self._dispatcher: Dispatcher | None = None
        self._jsonl: JsonlWriter | None = None
        self._monitor: Any = None
        self._log_handler: Any = None
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
        self.resource = self._make_resource()
        self._exporters = build_exporters(s)
        self._recorder = recorder = MetricRecorder(self.start_time, self.node)
        self.bus = bus = EventBus(s.queue_size, s.queue_full)
        self.bus_put = bus.put
        if self._forward is not None:
            self._jsonl = JsonlWriter(None, s.flush_interval, sink=self._forward)
        elif self.run_dir is not None:
            self._jsonl = JsonlWriter(
                self.run_dir / run_file_name(self._role, self.node, os.getpid()), s.flush_interval
            )
        export_processors = [*self._user_processors, *self._exporters.span_processors]
        if s.console:
            from otelflow.sinks.console import ConsoleTreeProcessor

            export_processors.append(ConsoleTreeProcessor())
        # ALWAYS_ON: the run directory keeps every span (the SDK would otherwise apply
        # OTEL_TRACES_SAMPLER from os.environ itself, ignoring arguments and environ=);
        # sampling applies to what is exported (task spans, by span id: see TraceTree).
        self.tracer_provider = TracerProvider(
            resource=self.resource, sampler=ALWAYS_ON, shutdown_on_exit=False
        )
        if self._jsonl is not None:
            self.tracer_provider.add_span_processor(JsonlSpanProcessor(bus.put))
        for proc in export_processors:
            self.tracer_provider.add_span_processor(proc)
        readers: list[MetricReader] = []
        if self._jsonl is not None and self.is_main:  # a worker's tasks are counted by its parent
            readers.append(
                PeriodicExportingMetricReader(
                    JsonlMetricExporter(bus.put_internal),
                    export_interval_millis=s.checkpoint_interval * 1000,
                )
            )
        readers += [*self._user_readers, *self._exporters.metric_readers]
        self._metric_readers = readers
        self.meter_provider = MeterProvider(
            resource=self.resource, metric_readers=readers, shutdown_on_exit=False
        )
        recorder.register(self.meter_provider.get_meter(METER_NAME, __version__))
        for reader in readers:
            bridge.install(reader, recorder, self.resource, __version__)
        from otelflow.tracing.tree import TraceTree

        self._tree = TraceTree(
            trace_id=self.trace_id,
            session_span_id=self.session_span_id,
            session_id=self.session_id,
            resource=self.resource,
            recorder=recorder,
            jsonl=self._jsonl,
            processors=export_processors,
            scope_spans=self._scope_spans,
            sample_ratio=_sample_ratio(s),
            version=__version__,
        )
        self._dispatcher = Dispatcher(
            bus, self._tree, recorder, self._jsonl, idle_wait=min(0.05, s.flush_interval / 2)
        )
        recorder.dropped_fn = lambda: bus.dropped
        recorder.depth_fn = lambda: len(bus.queue)
        recorder.throttled_fn = lambda: bus.throttled_ns / 1e9
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
        if s.capture_logs:
            from otelflow.integrations import logging as log_bridge

            self._log_handler = log_bridge.install(self, s.log_level)
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

    def _make_resource(self) -> Resource:
        # Resource.create() reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; our
        # default service name applies only when neither they nor an argument name one.
        base = Resource.create(
            {
                # from environ= as well as os.environ (Resource.create reads only the latter)
                **self.settings.resource_attributes,
                "otelflow.run.id": self.run_id,
                "otelflow.session.id": self.session_id,
            }
        )
        service = base.attributes.get("service.name", "")
        if self.settings.service_name:
            base = base.merge(Resource({"service.name": self.settings.service_name}))
        elif not service or str(service).startswith("unknown_service"):
            base = base.merge(Resource({"service.name": "otelflow"}))
        if self._user_resource is not None:
            base = base.merge(self._user_resource)
        return base

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

    def _scope_started(self, scope: Any, ev: Event) -> None:
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

    def unsubscribe(self, subscriber: Subscriber) -> bool:
        """Stop delivering to ``subscriber`` (its queued events are still delivered)."""
        if self._dispatcher is None:
            return False
        found = self._dispatcher.remove_subscriber(subscriber)
        if found:
            subscriber.stop(time.monotonic() + 5.0)
        return found

    # -- ids and context ---------------------------------------------------------------------

    def span_context(self, span_id: int) -> SpanContext:
        """An OTel ``SpanContext`` for ``span_id`` in this session's trace."""
        return SpanContext(self.trace_id, span_id, False, _SAMPLED)

    def task_span_id(self, task_id: str) -> int:
        """The span id the task ``task_id`` has in this session (deterministic)."""
        return ids.task_span_id(self.trace_id, task_id)

    def task_traceparent(self, task_id: str) -> str:
        """W3C ``traceparent`` for the task's span, to carry into a worker."""
        return ids.traceparent(self.trace_id, self.task_span_id(task_id))

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
        self.bus.queue.append(call)  # internal: bypasses the bound, never dropped
        self.bus.wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not call.done.wait(0.2):
            if not self._dispatcher.alive:
                return _TIMEOUT
            if deadline is not None and time.monotonic() > deadline:
                return _TIMEOUT
        if call.error is not None:
            raise call.error
        return call.result

    def summary(self) -> dict[str, Any]:
        """Counts, durations, waits, per-workflow totals, last resources, and losses.

        Computed from running aggregates. During the run it is a live view; after
        ``stop()`` it is final (and also written to ``run.json``).
        """
        if self._final_summary is not None:
            if self.bus is not None and self.bus.closed and self.bus.queue:
                self._count_leftover()
                self._final_summary["dropped"]["events"] = self.bus.dropped
            return self._final_summary
        return self._build_summary()

    def _build_summary(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "session_id": self.session_id,
            "trace_id": f"{self.trace_id:032x}",
            "enabled": self.settings.enabled,
        }
        if self._recorder is None:
            base.update(tasks={}, dropped={}, workflows={}, resources={})
            return base
        base.update(self._recorder.summary())
        if self.start_time:
            end = self.end_time or now_ns()
            base["elapsed_s"] = (end - self.start_time) / 1e9
        base["dropped"] = self._dropped()
        if self._monitor is not None:
            try:
                base["gpu"] = str(self._monitor.gpu_status())
            except Exception:  # noqa: BLE001
                pass
        return base

    def _dropped(self) -> dict[str, Any]:
        bus = self.bus
        d = self._dispatcher
        j = self._jsonl
        subs = d.subscribers if d is not None else ()
        tree = getattr(self, "_tree", None)
        out = {
            # `is not None`: an empty EventBus is falsy (it has __len__)
            "events": bus.dropped if bus is not None else 0,
            "throttled_s": round(bus.throttled_ns / 1e9, 6) if bus is not None else 0.0,
            "invalid_emits": self._invalid_emits,
            "subscriber_events": sum(s.dropped for s in subs) + getattr(self, "_gone_sub_drops", 0),
            "subscriber_errors": sum(s.errors for s in subs) + getattr(self, "_gone_sub_errors", 0),
            "jsonl_lines_lost": j.lines_lost if j else 0,
            "jsonl_write_errors": j.write_errors if j else 0,
            "sanitized_values": j.sanitized if j else 0,
            "late_events": tree.late_events if tree else 0,
            "duplicate_task_ids": tree.duplicate_tasks if tree else 0,
            "internal_errors": d.internal_errors if d else 0,
        }
        out.update(self._extra_drops)
        out["export_failures"] = self._export_failures()
        return out

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
        return self._exporters.failures()

    @property
    def prometheus_address(self) -> tuple[str, int] | None:
        """``(host, port)`` the Prometheus endpoint is bound to (the real port if 0 was asked)."""
        return self._exporters.prometheus_address

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
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
            from otelflow.integrations import logging as log_bridge

            log_bridge.uninstall(self._log_handler)
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
        # 4. last drain; then refuse new items and end the dispatcher.
        self._stage("the final drain", lambda: self._call(None, None))
        bus.close()
        dispatcher.exit(None)
        self._count_leftover()
        for sub in dispatcher.subscribers:
            self._stage("a subscriber's stop", lambda sub=sub: sub.stop(max(deadline, time.monotonic() + 1.0)))
        if self._jsonl is not None:
            self._stage("closing the run file", self._jsonl.close)
        from otelflow import _otel_globals, toolkit

        toolkit._close_ingest_files(self.run_dir)

        _otel_globals.session_stopped(self)
        self._final_summary = self._build_summary()
        self._write_run_json(status="completed", summary=self._final_summary)

    def _count_leftover(self) -> None:
        """Items that raced in after the bus closed: counted as dropped, never silently lost."""
        bus = self.bus
        if bus is not None and bus.closed and bus.queue:
            n = len(bus.queue)
            bus.queue.clear()
            bus.dropped += n

    async def astop(self, timeout: float = 30.0) -> dict[str, Any]:
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
                reader._collect = lambda *_a, **_k: None
                reader._shutdown_event.set()

    # -- run.json -----------------------------------------------------------------------------

    def _write_run_json(self, status: str, summary: dict[str, Any] | None = None) -> None:
        if self.run_dir is None or not self.is_main:  # run.json is the main process's
            return
        meta = {
            "run_id": self.run_id,
            "session_id": self.session_id,
            "service_name": self.resource.attributes.get("service.name") if self.resource else None,
            "trace_id": f"{self.trace_id:032x}",
            "session_span_id": f"{self.session_span_id:016x}",
            "start_time": self.start_time,
            "end_time": self.end_time,
            "status": status,
            "host": self.node,
            "pid": os.getpid(),
            "argv": redact_argv(sys.argv),
            "versions": _versions(),
            "config": self.settings.redacted(),
            "summary": summary,
        }
        problems = self._problems()
        if problems:
            meta["problems"] = problems
        path = self.run_dir / "run.json"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        data = msgspec.json.encode(meta, enc_hook=repr)
        try:
            tmp.write_bytes(msgspec.json.format(data, indent=2))
            os.replace(tmp, path)
        except OSError as exc:
            _remove(tmp)  # never leave a 0-byte run.tmp<pid> behind
            # A full disk: overwrite in place, compact and without the summary — the
            # blocks of the old run.json are reused, so the status still gets there.
            if not _overwrite(path, _compact(meta)):
                warn_visibly(_log, "otelflow could not write %s: %s", path, exc)

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


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _compact(meta: dict[str, Any]) -> bytes:
    small = {k: v for k, v in meta.items() if k not in ("summary", "versions", "config")}
    return msgspec.json.encode(small, enc_hook=repr)


def _overwrite(path: Path, data: bytes) -> bool:
    """Rewrite ``path`` in place (not atomically): the fallback when a new file cannot be made."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        os.ftruncate(fd, 0)
        os.write(fd, data)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)

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


def _noop_put(item: Any) -> bool:
    return False


def _new_run_id() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{random.getrandbits(24):06x}"


def _sample_ratio(s: Settings) -> float:
    sampler = s.sampler
    if sampler in ("always_off", "parentbased_always_off"):
        return 0.0
    if sampler in ("traceidratio", "parentbased_traceidratio"):
        return 1.0 if s.sampler_arg is None else s.sampler_arg
    return 1.0


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"otelflow": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for dist in ("opentelemetry-sdk", "prometheus-client", "psutil", "msgspec", "distributed"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out
