"""Dask distributed: ``otelflow.instrument(client)``, and ``--preload otelflow.integrations.dask``.

Use::

    with otelflow.start_telemetry(checkpoint_path="./telemetry"):
        client = Client(LocalCluster(n_workers=2))
        otelflow.instrument(client)             # registers the plugins; idempotent
        with otelflow.workflow_scope("sweep"):
            client.gather(client.map(simulate, range(100)))

Three pieces, each in its own module:

* :mod:`._scheduler` — a scheduler plugin: the lifecycle of every task of an instrumented
  client, from the scheduler's transitions (created, queued, processing, in memory,
  erred, released, forgotten, stolen) and a resource sample of every worker;
* :mod:`._worker` — a worker plugin: when each task really ran (the worker's clock), the
  task's trace context and scope while it runs, and user spans/events/logs made inside;
* :mod:`._client` — the client side: annotating graphs with the caller's scope, and
  turning the records into tracker calls on the client's telemetry.

The scheduler and workers need otelflow installed but no telemetry or filesystem of
their own: everything reaches the client over Dask's connections. For ``dask scheduler`` /
``dask worker`` processes, ``--preload otelflow.integrations.dask`` installs the plugins at
start (see docs/dask.md); ``otelflow.instrument(client)`` then finds them there.
"""

from __future__ import annotations

import logging
from typing import Any

from otelflow.integrations.dask._client import instrument_client, is_instrumented, recorder_of
from otelflow.integrations.dask._events import TaskAttempt, TaskStolen, TaskTimes
from otelflow.integrations.dask._scheduler import SchedulerRecorder
from otelflow.integrations.dask._worker import WorkerRecorder

__all__ = [
    "SchedulerRecorder",
    "TaskAttempt",
    "TaskStolen",
    "TaskTimes",
    "WorkerRecorder",
    "dask_setup",
    "instrument_client",
    "is_instrumented",
    "recorder_of",
]

_log = logging.getLogger("otelflow")


async def dask_setup(server: Any) -> None:
    """``--preload`` hook: install otelflow's plugin in a scheduler or worker at start."""
    from distributed import Scheduler, Worker

    if isinstance(server, Scheduler) and SchedulerRecorder.name not in server.plugins:
        server.add_plugin(SchedulerRecorder())
        _log.info("otelflow: scheduler plugin installed (preload)")
    elif isinstance(server, Worker) and WorkerRecorder.name not in server.plugins:
        await server.plugin_add(WorkerRecorder(), name=WorkerRecorder.name)
        _log.info("otelflow: worker plugin installed (preload)")
