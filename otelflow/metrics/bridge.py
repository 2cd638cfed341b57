"""Feeds otelflow's own histogram aggregates to OTel metric readers.

The Python SDK has no public "metric producer" hook yet, so for each reader on the
provider otelflow owns we wrap the collect callback the provider registered
(``MetricReader._set_collect_callback`` via :mod:`otelflow._otel_compat`, the same call ``MeterProvider`` makes) and add
the histograms to what the SDK collected. Every reader — JSONL snapshots, Prometheus,
OTLP, the user's own — then sees ordinary ``Histogram`` metrics in the ``otelflow``
scope. Readers that prefer delta temporality get deltas since their previous collect.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otelflow._otel_compat import collect_callback, histogram_temporality, set_collect_callback
from otelflow.events.model import now_ns
from otelflow.metrics.instruments import METER_NAME

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

    from otelflow.metrics.recorder import MetricRecorder

_log = logging.getLogger("otelflow")


def install(reader: MetricReader, recorder: MetricRecorder, resource: Resource, version: str) -> bool:
    """Wrap ``reader``'s collect callback so it also reports otelflow's histograms."""
    original = collect_callback(reader)
    if original is None:
        _log.warning(
            "otelflow could not attach its histograms to metric reader %r (it is not "
            "registered on a MeterProvider); counters and gauges still work.",
            reader,
        )
        return False
    delta = histogram_temporality(reader) == AggregationTemporality.DELTA
    scope = InstrumentationScope(METER_NAME, version)
    previous: dict[tuple[str, tuple[Any, ...]], tuple[list[int], int, float]] = {}
    last_time = [recorder.duration.start_ns]

    def collect(r: MetricReader, timeout_millis: float = 10_000) -> MetricsData | None:
        data = original(r, timeout_millis=timeout_millis)
        try:
            metrics = _histogram_metrics(recorder, delta, previous, last_time)
        except Exception as exc:  # noqa: BLE001 - never break the reader's export
            _log.warning("otelflow histograms could not be collected: %s", exc)
            return data
        if not metrics:
            return data
        return _merge(data, metrics, scope, resource)

    return set_collect_callback(reader, collect)


def _histogram_metrics(
    recorder: MetricRecorder,
    delta: bool,
    previous: dict[tuple[str, tuple[Any, ...]], tuple[list[int], int, float]],
    last_time: list[int],
) -> list[Metric]:
    now = now_ns()
    start = last_time[0] if delta else None
    metrics = []
    for (name, unit, description), agg in recorder.histograms():
        points = []
        for attrs, cum_buckets, cum_count, cum_total, lo, hi in agg.snapshot():
            buckets, count, total = cum_buckets, cum_count, cum_total
            if delta:
                key = (name, tuple(sorted(attrs.items())))
                prev = previous.get(key)
                previous[key] = (cum_buckets, cum_count, cum_total)
                if prev is not None:
                    buckets = [a - b for a, b in zip(cum_buckets, prev[0], strict=True)]
                    count = cum_count - prev[1]
                    total = cum_total - prev[2]
                if count == 0:
                    continue
            points.append(
                HistogramDataPoint(
                    attributes=attrs,
                    start_time_unix_nano=start if start is not None else agg.start_ns,
                    time_unix_nano=now,
                    count=count,
                    sum=total,
                    bucket_counts=buckets,
                    explicit_bounds=agg.bounds,
                    min=lo if math.isfinite(lo) else 0.0,
                    max=hi if math.isfinite(hi) else 0.0,
                )
            )
        if points:
            temporality = (
                AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
            )
            metrics.append(
                Metric(
                    name=name,
                    description=description,
                    unit=unit,
                    data=Histogram(data_points=points, aggregation_temporality=temporality),
                )
            )
    last_time[0] = now
    return metrics


def _merge(
    data: MetricsData | None, metrics: list[Metric], scope: InstrumentationScope, resource: Resource
) -> MetricsData:
    if data is None or not data.resource_metrics:
        return MetricsData(
            resource_metrics=[
                ResourceMetrics(
                    resource=resource,
                    scope_metrics=[ScopeMetrics(scope=scope, metrics=metrics, schema_url="")],
                    schema_url="",
                )
            ]
        )
    first = data.resource_metrics[0]
    scopes = list(first.scope_metrics)
    for i, sm in enumerate(scopes):
        if sm.scope.name == METER_NAME:
            scopes[i] = replace(sm, metrics=[*sm.metrics, *metrics])
            break
    else:
        scopes.append(ScopeMetrics(scope=scope, metrics=metrics, schema_url=""))
    return MetricsData(resource_metrics=[replace(first, scope_metrics=scopes), *data.resource_metrics[1:]])
