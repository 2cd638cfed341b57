"""Built-in exporters chosen by configuration: OTLP (gRPC / HTTP), Prometheus, console.

Each builder returns OTel SDK objects — span processors and metric readers — that the
session adds next to the JSONL sink and the user's own. Exporters are the official OTel
ones; the Prometheus endpoint is prometheus-client's, on a private registry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otelflow.errors import ConfigError

if TYPE_CHECKING:
    from otelflow.config.settings import OtlpSettings, Settings

_log = logging.getLogger("otelflow")


@dataclass
class BuiltExporters:
    """What the session must add to its providers, and what it must close at stop()."""

    span_processors: list[SpanProcessor] = field(default_factory=list)
    metric_readers: list[MetricReader] = field(default_factory=list)
    prometheus_server: Any = None
    prometheus_thread: Any = None
    prometheus_address: tuple[str, int] | None = None

    def close(self) -> None:
        """Stop the Prometheus HTTP server (readers/processors close with their provider)."""
        if self.prometheus_server is not None:
            try:
                self.prometheus_server.shutdown()
                self.prometheus_server.server_close()
            except Exception as exc:  # noqa: BLE001
                _log.debug("otelflow: closing the Prometheus endpoint failed: %s", exc)
            if self.prometheus_thread is not None:
                self.prometheus_thread.join(2.0)
            self.prometheus_server = None


def _otlp_span_exporter(cfg: OtlpSettings) -> Any:
    kwargs: dict[str, Any] = {"endpoint": cfg.endpoint, "headers": dict(cfg.headers) or None, "timeout": cfg.timeout_s}
    if cfg.protocol == "grpc":
        from grpc import Compression
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        kwargs["compression"] = Compression.Gzip if cfg.compression == "gzip" else Compression.NoCompression
        if cfg.insecure is not None:
            kwargs["insecure"] = cfg.insecure
        return OTLPSpanExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    kwargs["compression"] = HttpCompression.Gzip if cfg.compression == "gzip" else HttpCompression.NoCompression
    return HttpSpanExporter(**kwargs)


def _otlp_metric_exporter(cfg: OtlpSettings) -> Any:
    kwargs: dict[str, Any] = {"endpoint": cfg.endpoint, "headers": dict(cfg.headers) or None, "timeout": cfg.timeout_s}
    if cfg.protocol == "grpc":
        from grpc import Compression
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        kwargs["compression"] = Compression.Gzip if cfg.compression == "gzip" else Compression.NoCompression
        if cfg.insecure is not None:
            kwargs["insecure"] = cfg.insecure
        return OTLPMetricExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    kwargs["compression"] = HttpCompression.Gzip if cfg.compression == "gzip" else HttpCompression.NoCompression
    return HttpMetricExporter(**kwargs)


def build_exporters(settings: Settings) -> BuiltExporters:
    """Create the exporters ``settings`` asks for.

    Raises:
        ConfigError: The Prometheus port cannot be bound (in use, or not permitted).
    """
    built = BuiltExporters()
    if "otlp" in settings.traces_exporters:
        built.span_processors.append(BatchSpanProcessor(_otlp_span_exporter(settings.otlp_traces)))
    interval_ms = settings.metric_export_interval_s * 1000
    timeout_ms = settings.metric_export_timeout_s * 1000
    if "otlp" in settings.metrics_exporters:
        built.metric_readers.append(
            PeriodicExportingMetricReader(
                _otlp_metric_exporter(settings.otlp_metrics),
                export_interval_millis=interval_ms,
                export_timeout_millis=timeout_ms,
            )
        )
    if "console" in settings.metrics_exporters:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        built.metric_readers.append(
            PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=interval_ms)
        )
    if settings.prometheus_port is not None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=True)
        reader = PrometheusMetricReader(registry=registry)
        try:
            server, thread = start_http_server(
                settings.prometheus_port, addr=settings.prometheus_host, registry=registry
            )
        except OSError as exc:
            raise ConfigError(
                f"Cannot serve Prometheus metrics on {settings.prometheus_host}:"
                f"{settings.prometheus_port}: {exc.strerror or exc}; choose a free port with "
                "prometheus_port= or OTEL_EXPORTER_PROMETHEUS_PORT (0 picks one)."
            ) from exc
        built.metric_readers.append(reader)
        built.prometheus_server = server
        built.prometheus_thread = thread
        built.prometheus_address = server.server_address[:2]
    return built
