"""Every use of private OpenTelemetry SDK code, in one place, with the versions it is known on.

The Python SDK has no public ``MetricProducer`` yet, no public way to stop a periodic
reader's thread in a forked child, and keeps its "suppress instrumentation" context key
private. otelflow needs all three; they live here, each with a fallback that degrades
(logged once) instead of breaking, and ``pyproject.toml`` bounds ``opentelemetry-sdk`` to
the minor versions CI runs the suite on (the lowest supported and the newest).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricReader, MetricsData

__all__ = [
    "SUPPRESS_INSTRUMENTATION_KEY",
    "TESTED_SDK",
    "collect_callback",
    "disarm_periodic_reader",
    "histogram_temporality",
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
