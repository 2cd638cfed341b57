"""Integrations with execution engines and libraries (optional imports inside).

* :mod:`otelflow.integrations.dispatch` — ``otelflow.instrument(x)``: hands ``x`` to the
  integration for its engine, told by the module of its class (no engine is imported to tell).
* :mod:`otelflow.integrations.futures` — ``concurrent.futures`` executors (thread and
  process pools).
* :mod:`otelflow.integrations.dask` — a Dask ``distributed.Client`` (scheduler and worker plugins).
* :mod:`otelflow.integrations.asyncflow` — a RADICAL AsyncFlow ``WorkflowEngine`` (and the TAL drop-in).
* :mod:`otelflow.integrations.asyncio` — instrumented ``create_task`` and ``gather``.
* :mod:`otelflow.integrations.logging` — the ``logging`` bridge (``capture_logs``).
* :mod:`otelflow.integrations.parsl` — a Parsl DataFlowKernel (``otelflow.instrument(dfk)``
  dispatches to it by type, importing Parsl only then).
* :mod:`otelflow.integrations.academy` — Academy agents (``OtelflowLogConfig``).

See ``docs/executors.md``, ``docs/parsl.md``, ``docs/academy.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otelflow.integrations.dispatch import instrument, is_instrumented, uninstrument
    from otelflow.integrations.futures import UpstreamFailedError, task_id_of

__all__ = ["UpstreamFailedError", "instrument", "is_instrumented", "task_id_of", "uninstrument"]


def __getattr__(name: str) -> Any:
    # Lazy: the core's own modules (the toolkit) import submodules of this package, and
    # the executor integration imports the toolkit, so nothing is imported here eagerly.
    if name not in __all__:
        raise AttributeError(f"module 'otelflow.integrations' has no attribute {name!r}")
    home = "dispatch" if name in ("instrument", "is_instrumented", "uninstrument") else "futures"
    value = getattr(importlib.import_module(f"otelflow.integrations.{home}"), name)
    globals()[name] = value
    return value
