"""Every use of private OpenTelemetry SDK code, in one place, with the versions it is known on.

The Python SDK has no public ``MetricProducer`` yet, no public way to stop a periodic
reader's thread in a forked child, and keeps its "suppress instrumentation" context key
private; its logs SDK is private as a whole; the API keeps the context variable a hot path
sets (instead of three calls deep through ``context.attach``) private. otelflow needs all
of these; they live here, each with a fallback that degrades (logged once) instead of
breaking, and ``pyproject.toml`` bounds ``opentelemetry-sdk`` to the minor versions CI runs the suite on
(the lowest supported and the newest).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricReader, MetricsData

__all__ = [
    "SUPPRESS_INSTRUMENTATION_KEY",
    "TESTED_SDK",
    "collect_callback",
    "context_var",
    "disarm_periodic_reader",
    "emit_log",
    "histogram_temporality",
    "log_sdk",
    "otlp_log_exporter",
    "set_collect_callback",
]

_log = logging.getLogger("otelflow")

TESTED_SDK = ("1.42", "1.45")
"""The lowest and newest ``opentelemetry-sdk`` minor versions the suite runs on in CI."""

try:
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS
except ImportError:  # pragma: no cover - a future API that renamed it: suppress nothing
    _SUPPRESS = "suppress_instrumentation"

SUPPRESS_INSTRUMENTATION_KEY: str = _SUPPRESS
"""The context key OTel instrumentations check to skip telemetry made while exporting."""

CollectFn = Callable[..., "MetricsData | None"]


def context_var() -> ContextVar[Any] | None:
    """The ``ContextVar`` OTel's default runtime context keeps the current ``Context`` in.

    ``var.set(ctx)``/``var.reset(token)`` are what ``context.attach``/``detach`` do, without
    the two calls around each. None — use ``attach``/``detach`` — when another runtime
    context is configured (``OTEL_PYTHON_CONTEXT``) or this API keeps it elsewhere.
    """
    try:
        from opentelemetry import context as otel_context
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

        runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    except ImportError:  # pragma: no cover - a future API that moved it
        return None
    if type(runtime) is not ContextVarsRuntimeContext:
        return None
    var = getattr(runtime, "_current_context", None)
    if not isinstance(var, ContextVar) or var.get() is not otel_context.get_current():
        return None
    return var


def collect_callback(reader: MetricReader) -> CollectFn | None:
    """The collect callback the ``MeterProvider`` registered on ``reader``, or None."""
    fn: CollectFn | None = getattr(reader, "_collect", None)
    return fn


def set_collect_callback(reader: MetricReader, fn: CollectFn) -> bool:
    """Replace ``reader``'s collect callback (what ``MeterProvider`` itself calls). False if impossible."""
    setter = getattr(reader, "_set_collect_callback", None)
    if setter is None:
        return False
    setter(fn)
    return True


def histogram_temporality(reader: MetricReader) -> AggregationTemporality:
    """The temporality ``reader`` prefers for histograms (cumulative if it cannot be read)."""
    try:
        from opentelemetry.sdk.metrics._internal.instrument import _Histogram

        table: dict[Any, AggregationTemporality] = reader._instrument_class_temporality
        return table[_Histogram]
    except (ImportError, AttributeError, KeyError):
        return AggregationTemporality.CUMULATIVE


def disarm_periodic_reader(reader: MetricReader) -> None:
    """Make a ``PeriodicExportingMetricReader`` inherited by a forked child end at once, collecting nothing.

    The SDK restarts such a reader's thread in every forked child (its own at-fork hook);
    unchecked, each worker would export the parent's metrics again.
    """
    def collect_nothing(*_args: Any, **_kwargs: Any) -> None:
        return None

    try:
        setattr(reader, "_collect", collect_nothing)  # noqa: B010 - a private SDK attribute, on purpose
        getattr(reader, "_shutdown_event").set()  # noqa: B009
    except AttributeError:  # pragma: no cover - a reader without these: nothing to disarm
        pass


# --- logs --------------------------------------------------------------------------------------
# The OTel Python logs SDK and the OTLP log exporters still live in underscore modules
# (``opentelemetry.sdk._logs``, ``..._log_exporter``); 1.42 names the exporter base classes
# ``LogExporter``/``LogExportResult``, later versions ``LogRecordExporter``/``LogRecordExportResult``.


def log_sdk() -> Any:
    """The OTel logs SDK pieces otelflow uses, as a namespace (imported on first use)."""
    import types

    from opentelemetry._logs import SeverityNumber
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs import export as log_export

    return types.SimpleNamespace(
        LoggerProvider=LoggerProvider,
        SeverityNumber=SeverityNumber,
        BatchProcessor=log_export.BatchLogRecordProcessor,
        SimpleProcessor=log_export.SimpleLogRecordProcessor,
        Exporter=getattr(log_export, "LogRecordExporter", None) or log_export.LogExporter,
        ExportResult=getattr(log_export, "LogRecordExportResult", None) or log_export.LogExportResult,
        ConsoleExporter=getattr(log_export, "ConsoleLogRecordExporter", None) or log_export.ConsoleLogExporter,
    )


def otlp_log_exporter(protocol: str, **kwargs: Any) -> Any:
    """The official OTLP log exporter for ``protocol`` (``grpc`` or ``http/protobuf``)."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter

    return HttpLogExporter(**kwargs)


def emit_log(logger: Any, *, timestamp: int, observed_timestamp: int | None, trace_id: int | None,
             span_id: int | None, severity_number: Any, severity_text: str, body: str,
             attributes: dict[str, Any]) -> None:
    """Emit one log record on an SDK ``Logger`` with the given trace and span ids."""
    from opentelemetry import trace as otel_trace

    context = None
    if trace_id and span_id:
        span = otel_trace.NonRecordingSpan(
            otel_trace.SpanContext(trace_id, span_id, False, otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED))
        )
        context = otel_trace.set_span_in_context(span)
    try:
        logger.emit(
            timestamp=timestamp, observed_timestamp=observed_timestamp, context=context,
            severity_number=severity_number, severity_text=severity_text, body=body, attributes=attributes,
        )  # fmt: skip
    except TypeError:  # an SDK whose emit() takes a record only
        from opentelemetry.sdk._logs import LogRecord  # type: ignore[attr-defined]  # SDK 1.42

        logger.emit(
            LogRecord(
                timestamp=timestamp, observed_timestamp=observed_timestamp, trace_id=trace_id, span_id=span_id,
                trace_flags=otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED) if trace_id else None,
                severity_text=severity_text, severity_number=severity_number, body=body, attributes=attributes,
            )
        )  # fmt: skip
