"""Integrations with execution engines and libraries (optional imports inside).

* :mod:`otelflow.integrations.futures` — ``concurrent.futures`` executors (thread and
  process pools): :func:`instrument` / :func:`uninstrument`.
* :mod:`otelflow.integrations.asyncio` — instrumented ``create_task`` and ``gather``.
* :mod:`otelflow.integrations.logging` — the ``logging`` bridge (``capture_logs``).

See ``docs/executors.md``.
"""

from __future__ import annotations

from otelflow.integrations.futures import (
    UpstreamFailedError,
    instrument,
    is_instrumented,
    task_id_of,
    uninstrument,
)

__all__ = ["UpstreamFailedError", "instrument", "is_instrumented", "task_id_of", "uninstrument"]
