"""The OTel side of a session: its resource, tracer provider and meter provider.

One :class:`~otelflow.session.Telemetry` owns one of each (never the global ones unless asked,
see :mod:`otelflow._otel_globals`). Built here, from the settings and what the user passed:
the run directory's span and metric sinks, the user's processors and readers, and the
exporters the environment asks for, all fed by the same instruments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from otelflow._version import __version__
from otelflow.config.settings import Settings
from otelflow.metrics import bridge
from otelflow.metrics.instruments import METER_NAME
from otelflow.metrics.recorder import MetricRecorder
from otelflow.sinks.exporters import BuiltExporters
from otelflow.sinks.jsonl import JsonlMetricExporter, JsonlSpanProcessor

__all__ = ["Providers", "build_providers", "make_resource", "sample_ratio"]


def make_resource(settings: Settings, run_id: str, session_id: str, user_resource: Resource | None) -> Resource:
    """The session's resource: detected + ``OTEL_RESOURCE_ATTRIBUTES`` + run ids + ``service.name``."""
    # Resource.create() reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; our
    # default service name applies only when neither they nor an argument name one.
    base = Resource.create(
        {
            # from environ= as well as os.environ (Resource.create reads only the latter)
            **settings.resource_attributes,
            "otelflow.run.id": run_id,
            "otelflow.session.id": session_id,
        }
    )
    service = base.attributes.get("service.name", "")
    if settings.service_name:
        base = base.merge(Resource({"service.name": settings.service_name}))
    elif not service or str(service).startswith("unknown_service"):
        base = base.merge(Resource({"service.name": "otelflow"}))
    if user_resource is not None:
        base = base.merge(user_resource)
    return base


def sample_ratio(s: Settings) -> float:
    """The share of task spans exported (by span id), from ``OTEL_TRACES_SAMPLER[_ARG]``."""
    sampler = s.sampler
    if sampler in ("always_off", "parentbased_always_off"):
        return 0.0
    if sampler in ("traceidratio", "parentbased_traceidratio"):
        return 1.0 if s.sampler_arg is None else s.sampler_arg
    return 1.0


class Providers:
    """What :func:`build_providers` made: the two providers and what feeds the exporters."""

    __slots__ = ("export_processors", "meter_provider", "metric_readers", "tracer_provider")

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        metric_readers: list[MetricReader],
        export_processors: list[SpanProcessor],
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.metric_readers = metric_readers
        self.export_processors = export_processors


def build_providers(
    settings: Settings,
    resource: Resource,
    recorder: MetricRecorder,
    exporters: BuiltExporters,
    *,
    user_processors: Sequence[SpanProcessor],
    user_readers: Sequence[MetricReader],
    put: Callable[[Any], bool] | None,
    put_internal: Callable[[Any], bool] | None,
    snapshots: bool,
) -> Providers:
    """Build the tracer and meter providers of one session.

    Args:
        put: Hands span lines to the run directory (the bus); None when the session writes none.
        put_internal: Hands metric snapshots to the run directory (never dropped by the bound).
        snapshots: Write periodic metric snapshots to the run directory (the main process
            only: a worker's tasks are counted by its parent).
    """
    export_processors: list[SpanProcessor] = [*user_processors, *exporters.span_processors]
    if settings.console:
        from otelflow.sinks.console import ConsoleTreeProcessor

        export_processors.append(ConsoleTreeProcessor())
    # ALWAYS_ON: the run directory keeps every span (the SDK would otherwise apply
    # OTEL_TRACES_SAMPLER from os.environ itself, ignoring arguments and environ=);
    # sampling applies to what is exported (task spans, by span id: see TraceTree).
    tracer_provider = TracerProvider(resource=resource, sampler=ALWAYS_ON, shutdown_on_exit=False)
    if put is not None:
        tracer_provider.add_span_processor(JsonlSpanProcessor(put))
    for proc in export_processors:
        tracer_provider.add_span_processor(proc)
    readers: list[MetricReader] = []
    if snapshots and put_internal is not None:
        readers.append(
            PeriodicExportingMetricReader(
                JsonlMetricExporter(put_internal),
                export_interval_millis=settings.checkpoint_interval * 1000,
            )
        )
    readers += [*user_readers, *exporters.metric_readers]
    meter_provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    recorder.register(meter_provider.get_meter(METER_NAME, __version__))
    for reader in readers:
        bridge.install(reader, recorder, resource, __version__)
    return Providers(tracer_provider, meter_provider, readers, export_processors)
