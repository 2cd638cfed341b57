"""Exceptions raised by otelflow.

otelflow raises only at configuration and definition time (``start_telemetry()``,
``define_event()``, ``make_event()``). At run time, ``emit()``, sinks and exporters never
raise into user code: they log once, count, and carry on.
"""

from __future__ import annotations


class OtelflowError(Exception):
    """Base class for otelflow errors."""


class ConfigError(OtelflowError, ValueError):
    """A configuration value (argument or environment variable) is invalid."""


class EventError(OtelflowError, ValueError):
    """An event definition or event value is invalid."""
