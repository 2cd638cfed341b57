"""The records otelflow's Dask plugins send home, and the names they use.

Everything travels over Dask's own connections as msgpack-able lists (so no shared
filesystem and no extra port is needed):

* a worker calls ``worker.log_event(WORKER_TOPIC, {client_id: [record, ...]})``;
* the scheduler plugin adds its own records, in the order it saw everything, and sends
  each client's list with ``scheduler.log_event(client_topic(client_id), [record, ...])``;
* the client subscribed to that topic turns the records into tracker calls.

A record is ``[op, task_id, ...]`` (times are ns since the epoch):

=====  ============================================================================
``C``  created: task_id, name, dependency ids, scope dict or None, t
``Q``  queued (no worker free yet): task_id, t
``P``  processing, handed to a worker: task_id, t, worker address
``L``  released from processing (lost worker, retry, cancel): task_id, t, stimulus id
``B``  execution began (worker): task_id, run_id, t, worker, pid
``F``  execution ended (worker): task_id, start, end [, error type, message,
       stacktrace, Dask's time breakdown ``{action: seconds}`` — only if any]
``M``  in memory: task_id, t, worker, compute start, compute stop (scheduler clock)
``E``  erred: task_id, t, error type, message, stacktrace, cause task id
``X``  forgotten or canceled before it finished: task_id, t
``S``  stolen: task_id, t, victim, thief
``U``  a worker's resources: address, t, cpu %, memory bytes, memory limit, pid, gpu
``J``  forwarded JSONL lines: source name, bytes
``G``  a graph of this client reached the scheduler: its sequence number
``Z``  flush marker: token
=====  ============================================================================
"""

from __future__ import annotations

SCHEDULER_PLUGIN = "otelflow"
WORKER_PLUGIN = "otelflow-worker"
WORKER_TOPIC = "otelflow-worker"
CONTROL_TOPIC = "otelflow-control"
ANNOTATION = "otelflow"
"""The Dask annotation: ``{"c": client id, "q": graph sequence number, "s": scope dict,
"k": carrier dict, "l": capture logs}``."""


def client_topic(client_id: str) -> str:
    """The topic a client subscribes to for its own tasks' records."""
    return f"otelflow-{client_id}"


def task_id_of(key: object) -> str:
    """The otelflow task id of a Dask key: the key itself, or ``str()`` of a tuple key."""
    return key if isinstance(key, str) else str(key)
