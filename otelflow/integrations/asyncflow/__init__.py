"""Record RADICAL AsyncFlow workflows (radical-asyncflow / rhapsody-py 0.6).

* :func:`instrument` / :func:`uninstrument` — record an engine's tasks, blocks and
  workflow scopes on otelflow (``otelflow.instrument(flow)`` dispatches here).
* :func:`start_telemetry` — a drop-in for ``await flow.start_telemetry()``: the RHAPSODY
  telemetry layer's manager surface (``subscribe``, ``emit``, ``summary``, ``stop``),
  backed by otelflow.
* Reading old TAL checkpoints needs nothing from here: ``otelflow report`` reads them
  (:mod:`otelflow.analysis.tal`).

See ``docs/asyncflow.md``. Install with ``pip install 'otelflow[asyncflow]'``.
"""

from __future__ import annotations

from otelflow.integrations.asyncflow._dropin import AsyncFlowTelemetry, TALEvent, start_telemetry
from otelflow.integrations.asyncflow._engine import (
    SUPPORTED_VERSIONS,
    instrument,
    is_instrumented,
    uninstrument,
)

__all__ = [
    "SUPPORTED_VERSIONS",
    "AsyncFlowTelemetry",
    "TALEvent",
    "instrument",
    "is_instrumented",
    "start_telemetry",
    "uninstrument",
]
