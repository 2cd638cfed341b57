"""Built-in exporters chosen by configuration: OTLP (gRPC / HTTP), Prometheus, console.

:func:`build_exporters` returns OTel SDK objects — span processors and metric readers —
that the session adds next to the JSONL sink and the user's own, plus what it must close.
The exporters are the official OTel ones, run behind a circuit breaker
(:mod:`otelflow.sinks.resilience`) so that a down or slow collector costs the workflow
nothing. The Prometheus endpoint is prometheus-client's HTTP server on a private
registry, fed by the OTel Prometheus reader, so that Prometheus sees exactly the metrics
(names, units, resource as ``target_info``) that OTLP carries.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import SpanProcessor

from otelflow.errors import ConfigError
from otelflow.sinks._export_logs import ExportHealth, install_log_filter, uninstall_log_filter
from otelflow.sinks.resilience import (
    ExportGuard,
    GuardedMetricExporter,
    GuardedMetricReader,
    GuardedSpanProcessor,
)

if TYPE_CHECKING:
    from otelflow.config.settings import OtlpSettings, Settings

_log = logging.getLogger("otelflow")


@dataclass
class BuiltExporters:
    """What the session must add to its providers, and what it must close at stop().

    Attributes:
        span_processors: Processors for the session's tracer provider (OTLP, console).
        metric_readers: Readers for the session's meter provider (OTLP, Prometheus, console).
        guards: The circuit breakers around the OTLP exporters.
        health: Shared by the guards: the one warning about an unreachable collector.
        prometheus_server: The scrape endpoint's HTTP server, if any.
        prometheus_thread: The thread serving it.
        prometheus_address: ``(host, port)`` the scrape endpoint is bound to (the real
            port when 0 was asked for), or None.
    """

    span_processors: list[SpanProcessor] = field(default_factory=list)
    metric_readers: list[MetricReader] = field(default_factory=list)
    guards: list[ExportGuard] = field(default_factory=list)
    health: ExportHealth = field(default_factory=ExportHealth)
    prometheus_server: Any = None
    prometheus_thread: Any = None
    prometheus_address: tuple[str, int] | None = None
    _log_filter: bool = False

    def failures(self) -> int:
        """Spans and metric data points that could not be exported, so far."""
        return sum(getattr(obj, "otelflow_failures", 0) for obj in (*self.span_processors, *self.metric_readers))

    def failures_by_signal(self) -> dict[str, int]:
        """:meth:`failures` per signal: spans (``traces``), metric data points (``metrics``)
        and log records (``logs``: otelflow exports none over OTLP — they stay in the run
        directory — so always 0)."""
        out = {"traces": 0, "metrics": 0, "logs": 0}
        for obj in (*self.span_processors, *self.metric_readers):
            n = getattr(obj, "otelflow_failures", 0)
            if n:
                signal = "traces" if obj in self.span_processors else "metrics"
                out[signal] += n
        return out

    def begin_shutdown(self, deadline: float | None = None) -> None:
        """Open one shutdown flush window for every OTLP exporter at once.

        Call before shutting the providers down, so that metrics and spans share the
        window instead of taking one each. Exporters whose collector is known to be down
        are aborted now. ``deadline`` is a ``time.monotonic()`` value (``stop()``'s).
        """
        for guard in self.guards:
            guard.begin_close(deadline)

    def close(self) -> None:
        """Stop the Prometheus HTTP server and release what the OTLP exporters hold.

        Readers and processors are shut down with their provider first; this also covers
        a session whose providers never got them. Idempotent.
        """
        for guard in self.guards:
            guard.shutdown()
        if self._log_filter:
            uninstall_log_filter()
            self._log_filter = False
        if self.prometheus_server is not None:
            try:
                _stop_http_server(self.prometheus_server)
                self.prometheus_server.server_close()
            except Exception as exc:  # noqa: BLE001
                _log.debug("otelflow: closing the Prometheus endpoint failed: %s", exc)
            if self.prometheus_thread is not None:
                self.prometheus_thread.join(2.0)
            self.prometheus_server = None
            self.prometheus_thread = None


def _stop_http_server(server: Any, timeout: float = 2.0) -> None:
    """``server.shutdown()`` without waiting out ``serve_forever``'s 0.5 s poll.

    The shutdown request is only seen when the server's ``select`` returns; a connection
    to the server makes it return at once.
    """
    stopper = threading.Thread(target=server.shutdown, name="otelflow-prometheus-stop", daemon=True)
    stopper.start()
    host, port = server.server_address[:2]
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    deadline = time.monotonic() + timeout
    while stopper.is_alive() and time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.1).close()
        except OSError:
            pass
        stopper.join(0.02)


def otlp_exporter_kwargs(cfg: OtlpSettings) -> dict[str, Any]:
    """Keyword arguments for any of the official OTLP exporters (span, metric, log) of one
    signal: endpoint, headers, timeout, compression (gRPC's or HTTP's enum), TLS choice."""
    kwargs: dict[str, Any] = {"endpoint": cfg.endpoint, "headers": dict(cfg.headers) or None, "timeout": cfg.timeout_s}
    gzip = cfg.compression == "gzip"
    if cfg.protocol == "grpc":
        from grpc import Compression

        kwargs["compression"] = Compression.Gzip if gzip else Compression.NoCompression
        if cfg.insecure is not None:
            kwargs["insecure"] = cfg.insecure
    else:
        from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression

        kwargs["compression"] = HttpCompression.Gzip if gzip else HttpCompression.NoCompression
    return kwargs


def _otlp_span_exporter(cfg: OtlpSettings) -> Any:
    if cfg.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(**otlp_exporter_kwargs(cfg))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter(**otlp_exporter_kwargs(cfg))


def _otlp_metric_exporter(cfg: OtlpSettings) -> Any:
    if cfg.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(**otlp_exporter_kwargs(cfg))
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

    return HttpMetricExporter(**otlp_exporter_kwargs(cfg))


def safe_url(url: str) -> str:
    """``url`` without a password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def collector_address(cfg: OtlpSettings) -> tuple[str, int] | None:
    """Host and port the exporter connects to (the default port as gRPC / HTTP pick it).

    None when a proxy from the environment (``https_proxy``, ``grpc_proxy``, ...) applies
    to the host: then a direct connection says nothing about the collector.
    """
    parts = urlsplit(cfg.endpoint)
    if not parts.hostname:
        return None
    proxies = set(urllib.request.getproxies()) - {"no"}
    if proxies and not urllib.request.proxy_bypass(parts.hostname):
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        port = 80 if parts.scheme == "http" and cfg.protocol != "grpc" else 443
    return parts.hostname, port


def _guard(factory: Any, signal: str, cfg: OtlpSettings, health: ExportHealth) -> ExportGuard:
    return ExportGuard(
        factory,
        signal=signal,
        endpoint=safe_url(cfg.endpoint),
        protocol=cfg.protocol,
        flush_s=cfg.timeout_s,
        health=health,
        address=collector_address(cfg),
    )


def _prometheus(settings: Settings, built: BuiltExporters) -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, start_http_server

    assert settings.prometheus_port is not None
    # A private registry: nothing else in the process shows up on our endpoint, and
    # two sessions (or a test suite) never collide in prometheus-client's global one.
    registry = CollectorRegistry(auto_describe=True)
    try:
        server, thread = start_http_server(settings.prometheus_port, addr=settings.prometheus_host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"Cannot serve Prometheus metrics on {settings.prometheus_host}:"
            f"{settings.prometheus_port}: {exc.strerror or exc}; choose a free port with "
            "prometheus_port= or OTEL_EXPORTER_PROMETHEUS_PORT (0 picks one)."
        ) from exc
    built.metric_readers.append(PrometheusMetricReader(registry=registry))
    built.prometheus_server = server
    built.prometheus_thread = thread
    host, port = server.server_address[:2]
    built.prometheus_address = (str(host), int(port))


def build_exporters(settings: Settings) -> BuiltExporters:
    """Create the exporters ``settings`` asks for.

    OTLP exporters come wrapped in an :class:`~otelflow.sinks.resilience.ExportGuard`
    (see :mod:`otelflow.sinks.resilience`); nothing here connects to a collector.
    ``console`` in ``traces_exporters`` adds the console span tree, unless
    ``settings.console`` is set, in which case the session adds it itself.

    Raises:
        ConfigError: The Prometheus port cannot be bound (in use, or not permitted).
    """
    built = BuiltExporters()
    if settings.prometheus_port is not None:
        _prometheus(settings, built)
    try:
        _otlp_and_console(settings, built)
    except BaseException:
        built.close()
        raise
    return built


def _otlp_and_console(settings: Settings, built: BuiltExporters) -> None:
    interval_ms = settings.metric_export_interval_s * 1000
    timeout_ms = settings.metric_export_timeout_s * 1000
    if "otlp" in settings.traces_exporters:
        cfg = settings.otlp_traces
        guard = _guard(lambda: _otlp_span_exporter(cfg), "traces", cfg, built.health)
        built.guards.append(guard)
        built.span_processors.append(
            GuardedSpanProcessor(
                guard,
                max_queue=settings.bsp_max_queue_size,
                batch_size=settings.bsp_max_export_batch_size,
                delay_s=settings.bsp_schedule_delay_s,
            )
        )
    if "otlp" in settings.metrics_exporters:
        mcfg = settings.otlp_metrics
        guard = _guard(lambda: _otlp_metric_exporter(mcfg), "metrics", mcfg, built.health)
        built.guards.append(guard)
        built.metric_readers.append(
            GuardedMetricReader(
                GuardedMetricExporter(guard), export_interval_millis=interval_ms, export_timeout_millis=timeout_ms
            )
        )
    if built.guards:
        install_log_filter([type(g.exporter).__module__ for g in built.guards])
        built._log_filter = True
    if "console" in settings.metrics_exporters:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        built.metric_readers.append(
            PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=interval_ms)
        )
    if "console" in settings.traces_exporters and not settings.console:
        from otelflow.sinks.console import ConsoleTreeProcessor

        built.span_processors.append(ConsoleTreeProcessor())
