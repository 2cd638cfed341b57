"""Send captured log records as OTel log records (``OTEL_LOGS_EXPORTER=otlp,console``).

A :class:`LogExport` subscribes to the session's ``LogRecord`` events (its own thread and
bounded queue: a slow collector never slows the run) and hands each to an OTel SDK
``LoggerProvider`` whose processors run the official exporters — the OTLP log exporter
(gRPC or HTTP, per ``OTEL_EXPORTER_OTLP_PROTOCOL``) behind a batch processor and
otelflow's circuit breaker (:class:`~otelflow.sinks.resilience.ExportGuard`, as for spans
and metrics: a dead collector costs one failed export and one warning, and never holds up
``stop()``), and/or the console exporter. Each OTel record carries the event's trace and span ids (so a backend
links a log line to its span), its severity, the formatted message as body, and as
attributes the ``extra`` fields plus ``otelflow.task.id``/``workflow.id``/``block.id``,
``code.*``, ``thread.name`` and ``exception.*`` (semantic conventions). The SDK's logs
API is still private; every use of it is in :mod:`otelflow._otel_compat`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from otelflow import _otel_compat
from otelflow.events.model import Event, LogRecord
from otelflow.sinks._export_logs import install_log_filter, uninstall_log_filter
from otelflow.sinks.exporters import collector_address, otlp_exporter_kwargs, safe_url
from otelflow.sinks.resilience import ExportGuard

if TYPE_CHECKING:
    from otelflow.bus.subscribers import Subscriber
    from otelflow.config.settings import OtlpSettings, Settings
    from otelflow.session import Telemetry

__all__ = ["LogExport", "to_attributes"]

_log = logging.getLogger("otelflow")
_encode = msgspec.json.encode


def _counting(sdk: Any, inner: Any) -> Any:
    """Wrap an exporter: count the records it could not export; never raise."""

    class Counting(sdk.Exporter):  # type: ignore[misc]
        def __init__(self) -> None:
            self.inner = inner
            self.failures = 0

        def export(self, batch: Sequence[Any]) -> Any:
            try:
                result = self.inner.export(batch)
            except Exception:  # noqa: BLE001 - an exporter bug must not kill the batch thread
                result = sdk.ExportResult.FAILURE
            if result is not sdk.ExportResult.SUCCESS:
                self.failures += len(batch)
            return result

        def shutdown(self) -> None:
            self.inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(self.inner.force_flush(timeout_millis))

    return Counting()


def _guarded(sdk: Any, guard: ExportGuard) -> Any:
    """An exporter that runs the OTLP one through otelflow's circuit breaker (as spans and
    metrics do): a dead collector costs one failed export, then nothing until a probe
    succeeds; its retries never hold up ``stop()``; one warning per session."""

    class Guarded(sdk.Exporter):  # type: ignore[misc]
        def __init__(self) -> None:
            self.guard = guard
            self.failures = 0

        def export(self, batch: Sequence[Any]) -> Any:
            ok = guard.run(lambda exporter: exporter.export(batch) == sdk.ExportResult.SUCCESS)
            if not ok:
                self.failures += len(batch)
            return sdk.ExportResult.SUCCESS if ok else sdk.ExportResult.FAILURE

        def shutdown(self) -> None:
            guard.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True  # nothing is buffered here

    return Guarded()


def _otlp_exporter(cfg: OtlpSettings) -> Any:
    return _otel_compat.otlp_log_exporter(cfg.protocol, **otlp_exporter_kwargs(cfg))


class LogExport:
    """The session's OTel log pipeline: a subscriber feeding a ``LoggerProvider``."""

    def __init__(self, sdk: Any, provider: Any, exporters: list[Any], guard: ExportGuard | None = None) -> None:
        self._sdk = sdk
        self._guard = guard
        self.provider = provider
        self._exporters = exporters
        self._logger = provider.get_logger("otelflow.logs")
        self._severity = {
            "DEBUG": sdk.SeverityNumber.DEBUG,
            "INFO": sdk.SeverityNumber.INFO,
            "WARNING": sdk.SeverityNumber.WARN,
            "ERROR": sdk.SeverityNumber.ERROR,
            "CRITICAL": sdk.SeverityNumber.FATAL,
        }
        self.subscriber: Subscriber | None = None

    @classmethod
    def start(cls, tel: Telemetry, settings: Settings) -> LogExport:
        """Build the exporters ``settings.logs_exporters`` names and subscribe to ``tel``."""
        from otelflow.bus.subscribers import Subscriber

        sdk = _otel_compat.log_sdk()
        provider = sdk.LoggerProvider(resource=tel.resource, shutdown_on_exit=False)
        exporters: list[Any] = []
        guard = None
        cfg = settings.otlp_logs
        if "otlp" in settings.logs_exporters and cfg is not None:
            guard = ExportGuard(
                lambda: _otlp_exporter(cfg), signal="logs", endpoint=safe_url(cfg.endpoint),
                protocol=cfg.protocol, flush_s=cfg.timeout_s, health=tel._exporters.health,
                address=collector_address(cfg),
            )  # fmt: skip
            install_log_filter()  # the exporter's per-attempt warnings: one of ours instead
            otlp = _guarded(sdk, guard)
            exporters.append(otlp)
            provider.add_log_record_processor(sdk.BatchProcessor(otlp))
        if "console" in settings.logs_exporters:
            # sys.stdout now, not the SDK's default bound when its module was imported
            console = _counting(sdk, sdk.ConsoleExporter(out=sys.stdout))
            exporters.append(console)
            provider.add_log_record_processor(sdk.SimpleProcessor(console))
        export = cls(sdk, provider, exporters, guard)
        export.subscriber = Subscriber(export.emit, (LogRecord,), maxsize=10_000)
        tel.add_subscriber(export.subscriber)
        return export

    def emit(self, ev: Event) -> None:
        """Hand one captured record to the OTel pipeline (the subscriber's thread)."""
        if not isinstance(ev, LogRecord):
            return
        _otel_compat.emit_log(
            self._logger,
            timestamp=ev.event_time,
            observed_timestamp=ev.emit_time or None,
            trace_id=int(ev.trace_id, 16) if ev.trace_id else None,
            span_id=int(ev.span_id, 16) if ev.span_id else None,
            severity_number=self._severity.get(ev.level, self._sdk.SeverityNumber.UNSPECIFIED),
            severity_text=ev.level,
            body=ev.message,
            attributes=to_attributes(ev),
        )

    def failures(self) -> int:
        """Records the exporters could not export, so far."""
        return sum(int(e.failures) for e in self._exporters)

    def shutdown(self, deadline: float) -> None:
        """Flush what is queued (bounded by ``deadline``, a ``time.monotonic()``) and stop."""
        if self.subscriber is not None:
            self.subscriber.stop(deadline)  # the subscriber delivers what it holds first
        if self._guard is not None:
            self._guard.begin_close(deadline)  # one bounded flush window; none if it is down
        left_ms = max(100, int((deadline - time.monotonic()) * 1000))
        try:
            self.provider.force_flush(left_ms)
            self.provider.shutdown()
        finally:
            if self._guard is not None:
                self._guard.shutdown()
                uninstall_log_filter()


def to_attributes(ev: LogRecord) -> dict[str, Any]:
    """OTel attributes for one record: ``extra`` fields (non-scalars as JSON text) and ids."""
    out: dict[str, Any] = {"logger.name": ev.logger}
    if ev.attributes:
        for key, value in ev.attributes.items():
            if isinstance(value, (str, bool, int, float)):
                out[key] = value
            elif value is not None:
                out[key] = _encode(value).decode()
    for key, value in (
        ("otelflow.task.id", ev.task_id),
        ("otelflow.workflow.id", ev.workflow_id),
        ("otelflow.block.id", ev.block_id),
        ("otelflow.session.id", ev.session_id),
        ("thread.name", ev.thread),
        ("process.pid", ev.process),
        ("exception.type", ev.exception_type),
        ("exception.message", ev.exception_message),
        ("exception.stacktrace", ev.stacktrace),
        ("otelflow.log.template", ev.template),
    ):
        if value is not None:
            out[key] = value
    if ev.code:
        path, _, line = ev.code.rpartition(":")
        out["code.file.path"] = path
        if line.isdigit():
            out["code.line.number"] = int(line)
    return out
