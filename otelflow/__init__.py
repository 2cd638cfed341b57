"""otelflow: first-class OpenTelemetry observability for task and workflow systems.

Quick use::

    import otelflow

    with otelflow.start_telemetry(checkpoint_path="./telemetry") as telemetry:
        with otelflow.workflow_scope("etl"):
            with otelflow.block("load"):
                load()                       # @otelflow.task functions become task spans
    print(telemetry.summary())
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from otelflow import _global
from otelflow._version import __version__
from otelflow.errors import ConfigError, EventError, OtelflowError

if TYPE_CHECKING:
    from otelflow.bus.subscribers import Subscriber
    from otelflow.events import Event, define_event, make_event
    from otelflow.integrations.dispatch import instrument, uninstrument
    from otelflow.logs import capture_logging
    from otelflow.run_summary import Summary
    from otelflow.scope import ScopeRef, adopt_scope, block, current_scope, workflow_scope
    from otelflow.session import Telemetry
    from otelflow.tasks import TaskTracker, task, tracker

# Imported on first use (PEP 562): `import otelflow` — and the pytest plugin installing it
# registers in every pytest run — loads neither the OTel SDK nor the pipeline until needed.
_LAZY = {
    "Event": "otelflow.events",
    "define_event": "otelflow.events",
    "make_event": "otelflow.events",
    "instrument": "otelflow.integrations.dispatch",
    "capture_logging": "otelflow.logs",
    "uninstrument": "otelflow.integrations.dispatch",
    "ScopeRef": "otelflow.scope",
    "adopt_scope": "otelflow.scope",
    "block": "otelflow.scope",
    "current_scope": "otelflow.scope",
    "workflow_scope": "otelflow.scope",
    "Telemetry": "otelflow.session",
    "Summary": "otelflow.run_summary",
    "TaskTracker": "otelflow.tasks",
    "task": "otelflow.tasks",
    "tracker": "otelflow.tasks",
}


__all__ = [
    "ConfigError",
    "Event",
    "EventError",
    "OtelflowError",
    "ScopeRef",
    "Summary",
    "TaskTracker",
    "Telemetry",
    "__version__",
    "adopt_scope",
    "block",
    "capture_logging",
    "current_scope",
    "current_telemetry",
    "define_event",
    "emit",
    "instrument",
    "make_event",
    "start_telemetry",
    "stop",
    "subscribe",
    "summary",
    "task",
    "tracker",
    "uninstrument",
    "unsubscribe",
    "workflow_scope",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'otelflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


logging.getLogger("otelflow").addHandler(logging.NullHandler())
_log = logging.getLogger("otelflow")


def start_telemetry(
    *,
    checkpoint_path: str | os.PathLike[str] | None = None,
    resource_poll_interval: float | None = None,
    checkpoint_interval: float | None = None,
    span_processors: Sequence[Any] = (),
    metric_readers: Sequence[Any] = (),
    resource: Any = None,
    service_name: str | None = None,
    prometheus_port: int | None = None,
    name: str | None = None,
    environ: Mapping[str, str] | None = None,
    # Every other setting (docs/configuration.md); None means "from the environment, else default".
    enabled: bool | None = None,
    resource_attributes: Mapping[str, str] | str | None = None,
    traces_exporter: str | Sequence[str] | None = None,
    traces_exporters: str | Sequence[str] | None = None,
    metrics_exporter: str | Sequence[str] | None = None,
    metrics_exporters: str | Sequence[str] | None = None,
    logs_exporter: str | Sequence[str] | None = None,
    logs_exporters: str | Sequence[str] | None = None,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    otlp_headers: Mapping[str, str] | str | None = None,
    otlp_traces: Any = None,
    otlp_metrics: Any = None,
    otlp_logs: Any = None,
    prometheus_host: str | None = None,
    sampler: str | None = None,
    sampler_arg: float | None = None,
    metric_export_interval_s: float | None = None,
    metric_export_timeout_s: float | None = None,
    bsp_schedule_delay_s: float | None = None,
    bsp_max_queue_size: int | None = None,
    bsp_max_export_batch_size: int | None = None,
    runs_dir: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    flush_interval: float | None = None,
    jsonl: bool | None = None,
    jsonl_compression: str | None = None,
    console: bool | None = None,
    handle_signals: bool | None = None,
    queue_size: int | None = None,
    queue_full: str | None = None,
    set_global_providers: str | bool | None = None,
    capture_logs: bool | None = None,
    log_level: str | int | None = None,
    capture_loggers: str | Sequence[str] | None = None,
    live_port: int | None = None,
    live_host: str | None = None,
    wait_spans: bool | None = None,
    trace_per: str | None = None,
) -> Telemetry:
    """Start telemetry for this process and make it current.

    Args:
        checkpoint_path: Runs directory; each run gets ``<checkpoint_path>/<run-id>/``
            (env ``OTELFLOW_RUNS_DIR``, default ``./.otelflow/runs``).
        resource_poll_interval: Seconds between resource samples; 0 disables
            (``OTELFLOW_RESOURCE_POLL_INTERVAL``, default 5).
        checkpoint_interval: Seconds between metric snapshots in the JSONL
            (``OTELFLOW_CHECKPOINT_INTERVAL``, default 10).
        span_processors: Your OTel span processors, added next to the built-in sinks.
        metric_readers: Your OTel metric readers, added next to the built-in ones.
        resource: An OTel ``Resource`` merged over the detected one.
        service_name: ``service.name`` (env ``OTEL_SERVICE_NAME``; default ``otelflow``).
        prometheus_port: Serve a Prometheus scrape endpoint on this port
            (``OTEL_EXPORTER_PROMETHEUS_PORT``); 0 picks a free port.
        name: The session span's name, as a trace list shows it; default
            ``session <service name> <run id>``.
        environ: Read the ``OTEL_*`` / ``OTELFLOW_*`` variables from this mapping instead
            of ``os.environ`` (``{}``: arguments and defaults only).
        enabled ... trace_per: Every other setting, by the name docs/configuration.md gives
            it next to its environment variable; an argument beats the variable.

    Returns:
        The running :class:`Telemetry` (also a context manager, sync and async).
        If telemetry is already running in this process, that one is returned and a
        warning says the new arguments were ignored; stop it first to change settings.

    Raises:
        ConfigError: A bad argument or environment value; the message names the fix.
    """
    existing = _global.current()
    if existing is not None and not existing.active:
        existing.stop()  # a disabled (or half-started) one must not stay current
        existing = None
    if existing is not None and existing.active:
        _log.warning(
            "otelflow telemetry is already running (run %s); returning it and ignoring the new "
            "arguments. Call stop() first to start with different settings.",
            existing.run_id,
        )
        return existing
    from otelflow.session import Telemetry

    # Every keyword above is a setting except these four, which the Telemetry takes itself.
    options = {k: v for k, v in locals().items() if k in _SETTING_ARGUMENTS}
    telemetry = Telemetry(
        span_processors=span_processors,
        metric_readers=metric_readers,
        resource=resource,
        name=name,
        environ=dict(environ) if environ is not None else None,
        **options,
    )
    return telemetry.start()


_SETTING_ARGUMENTS = frozenset(inspect.signature(start_telemetry).parameters) - {
    "span_processors",
    "metric_readers",
    "resource",
    "name",
    "environ",
}


def current_telemetry() -> Telemetry | None:
    """The running telemetry of this process, or None."""
    return _global.current()


def stop(timeout: float = 30.0) -> Summary | None:
    """Stop the current telemetry and return its summary; None (a no-op) if none runs."""
    tel = _global.current()
    return tel.stop(timeout) if tel is not None else None


def emit(event: Event | str, /, **fields: Any) -> bool:
    """Emit an event on the current telemetry. O(1), thread-safe, never raises.

    Returns False (doing nothing) when no telemetry runs or the event was invalid
    (the reason is logged once).
    """
    tel = _global._current
    if tel is None:
        return False
    return tel.emit(event, **fields)


def subscribe(
    callback: Callable[[Event], Any],
    event_types: type[Event] | Sequence[type[Event]] | None = None,
) -> Subscriber:
    """Subscribe ``callback`` to the current telemetry's events (see ``Telemetry.subscribe``).

    Raises:
        OtelflowError: No telemetry is running; call ``start_telemetry()`` first.
    """
    tel = _global.current()
    if tel is None:
        raise OtelflowError("No telemetry is running; call otelflow.start_telemetry() before subscribe().")
    return tel.subscribe(callback, event_types)


def unsubscribe(subscriber: Subscriber) -> bool:
    """Remove a subscriber from the current telemetry. Returns False if it was not found."""
    tel = _global.current()
    return tel.unsubscribe(subscriber) if tel is not None else False


def summary() -> Summary | None:
    """The current telemetry's ``summary()``, or None if none runs."""
    tel = _global.current()
    return tel.summary() if tel is not None else None
