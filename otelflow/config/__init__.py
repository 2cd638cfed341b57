"""otelflow's configuration: environment variables, arguments, and the settings they make.

:func:`load_settings` turns ``start_telemetry()`` arguments and ``OTEL_*`` /
``OTELFLOW_*`` environment variables into a frozen :class:`Settings`; :data:`ENV_VARS`
documents every variable (``docs/configuration.md`` is rendered from it). This package
imports nothing from otelflow but :mod:`otelflow.errors`.
"""

from __future__ import annotations

from otelflow.config.env import ENV_VARS, EnvVar
from otelflow.config.settings import ARGUMENTS, Argument, OtlpSettings, Settings, load_settings

__all__ = [
    "ARGUMENTS",
    "ENV_VARS",
    "Argument",
    "EnvVar",
    "OtlpSettings",
    "Settings",
    "load_settings",
]
