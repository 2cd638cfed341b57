"""The client side: instrumenting a ``distributed.Client``, and recording what its tasks did.

:func:`instrument_client` registers the scheduler and worker plugins (idempotently),
subscribes the client to its records' topic, and makes the client's ``submit``, ``map``,
``compute``, ``persist`` and ``get`` (which ``dask.compute`` and ``.compute()`` use) annotate
every graph with ``otelflow={"c": client id, "s": scope, "k": carrier}`` — the caller's
workflow/block scope and how workers join the run.

:class:`Recorder` runs on the client's event loop: each record from the scheduler plugin
becomes one tracker call (or one event) on the client's telemetry, so the run directory
on the submitting host is complete whatever host the scheduler and workers run on.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from dask.base import annotate

import otelflow
from otelflow import toolkit
from otelflow.events import ResourceUpdate
from otelflow.integrations.dask._events import TaskAttempt, TaskStolen, TaskTimes
from otelflow.integrations.dask._protocol import ANNOTATION, CONTROL_TOPIC, client_topic
from otelflow.integrations.dask._scheduler import SchedulerRecorder
from otelflow.integrations.dask._worker import WorkerRecorder

if TYPE_CHECKING:
    from collections.abc import Callable

    from distributed import Client

    from otelflow.session import Telemetry

__all__ = ["Recorder", "instrument_client", "is_instrumented", "recorder_of"]

_log = logging.getLogger("otelflow")
_ATTR = "_otelflow_dask"
_PATCHED = ("submit", "map", "compute", "persist", "get")
_FLUSH_TIMEOUT = 5.0
_RECENT = 16384


def instrument_client(
    client: Client,
    *,
    telemetry: Telemetry | None = None,
    user_telemetry: bool = True,
    resource_interval: float = 1.0,
    worker_export: bool | None = None,
) -> Client:
    """Record every task ``client`` submits; returns the client. Idempotent.

    Args:
        client: A connected, synchronous ``distributed.Client``.
        telemetry: Record on this telemetry instead of the process's current one.
        user_telemetry: Workers join the run so spans, events and logs made inside
            tasks are recorded (sent home over Dask's connections).
        resource_interval: Seconds between per-worker resource samples (0: none).
        worker_export: Workers also export the spans made in tasks over OTLP with their
            own settings; None: those that have OTLP settings of their own do. The run
            directory gets them either way; each span is exported once (by the worker).

    The plugins are registered once per cluster: the first instrumented client's
    ``user_telemetry``, ``resource_interval`` and ``worker_export`` apply to all.
    """
    from distributed import Client as _Client

    if not isinstance(client, _Client):
        raise TypeError(
            f"otelflow.instrument() takes a distributed.Client, not {type(client).__name__}; "
            "connect one first, e.g. otelflow.instrument(Client(cluster))."
        )
    if client.asynchronous:
        raise TypeError(
            "otelflow.instrument() supports synchronous dask Clients; create the Client "
            "without asynchronous=True (or instrument a synchronous Client to the same scheduler)."
        )
    d = vars(client)
    rec: Recorder | None = d.get(_ATTR)
    # The plugins are registered every time: a restarted scheduler has lost them, and a
    # second registration is ignored by the scheduler (idempotent=True).
    client.register_plugin(SchedulerRecorder(resource_interval=resource_interval))
    client.register_plugin(WorkerRecorder(user_telemetry=user_telemetry, export=worker_export))
    fresh = rec is None
    if rec is None:
        rec = d[_ATTR] = Recorder(client, telemetry)
    # Subscribing again is harmless (the scheduler keeps a set) and needed after a
    # scheduler restart: the client does not renew its subscriptions on reconnect.
    client.subscribe_topic(client_topic(client.id), rec.handle)  # type: ignore[no-untyped-call]
    rec.hello()
    if not fresh:
        if telemetry is not None:
            rec.pin(telemetry)
        return client
    for name in _PATCHED:
        d[name] = _annotating(getattr(client, name), rec)
    d["close"] = _closing(client.close, rec)
    return client


def is_instrumented(client: Client) -> bool:
    """True if :func:`instrument_client` was applied to ``client``."""
    return _ATTR in getattr(client, "__dict__", {})


def recorder_of(client: Client) -> Recorder | None:
    """The :class:`Recorder` of an instrumented client, or None."""
    return getattr(client, "__dict__", {}).get(_ATTR)


def _annotating(method: Callable[..., Any], rec: Recorder) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        payload = rec.payload()
        if payload is None:
            return method(*args, **kwargs)
        with annotate(**{ANNOTATION: payload}):
            return method(*args, **kwargs)

    return call


def _closing(close: Callable[..., Any], rec: Recorder) -> Callable[..., Any]:
    @functools.wraps(close)
    def call(*args: Any, **kwargs: Any) -> Any:
        rec.finish()
        return close(*args, **kwargs)

    return call


class _Task:
    """What the client knows about one task in flight."""

    __slots__ = (
        "attempt", "last", "n", "name", "queued", "scope", "start", "started", "submitted", "tid", "worker",
    )  # fmt: skip

    def __init__(self, tid: str, n: int, name: str, scope: toolkit.ScopeRef | None) -> None:
        self.tid = tid  # the otelflow task id: the key, or key#n when the key ran before
        self.n = n
        self.name = name
        self.scope = scope
        self.queued = False
        self.submitted = False
        self.started = False
        self.attempt = 1
        self.worker: str | None = None
        self.start: int | None = None  # the current attempt's start (worker clock)
        self.last: tuple[Any, ...] | None = None  # the current attempt's end (F record)


class Recorder:
    """Turns one client's records into tracker calls on its telemetry (client event loop)."""

    def __init__(self, client: Client, telemetry: Telemetry | None) -> None:
        self.client_id = client.id
        self._client = client
        self._telemetry = telemetry
        self._run: str | None = None
        self._tracker = otelflow.tracker(backend="dask", telemetry=telemetry)
        self._tasks: dict[str, _Task] = {}  # by key id
        # Keys finished in this run (bounded): key id -> how many times it ran.
        self._done: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        self._tokens = itertools.count(1)
        self._sent = 0  # graphs annotated so far
        self._acked = 0  # the last graph the scheduler plugin acknowledged
        self._ack = threading.Condition()
        self._flushed: dict[int, threading.Event] = {}
        self._carrier: tuple[str, toolkit.ScopeRef | None, dict[str, Any]] | None = None
        #: records that could not be applied (a bug or a malformed message), by op
        self.errors: dict[str, int] = {}
        self._ops: dict[str, Callable[[Telemetry, list[Any]], None]] = {
            "C": self._created,
            "Q": self._queued,
            "P": self._processing,
            "L": self._released,
            "B": self._began,
            "F": self._ended,
            "M": self._memory,
            "E": self._erred,
            "X": self._forgotten,
            "S": self._stolen,
            "U": self._resources,
            "J": self._jsonl,
        }

    def pin(self, telemetry: Telemetry) -> None:
        """Record on ``telemetry`` from now on (``instrument(client, telemetry=...)`` again)."""
        with self._lock:
            self._telemetry = telemetry
            self._tracker = otelflow.tracker(backend="dask", telemetry=telemetry)

    # -- submit side ----------------------------------------------------------------------------

    def _tel(self) -> Telemetry | None:
        tel = self._telemetry or otelflow.current_telemetry()
        return tel if tel is not None and tel.active else None

    def payload(self) -> dict[str, Any] | None:
        """The annotation for a graph submitted now; None while no telemetry runs."""
        tel = self._tel()
        if tel is None:
            return None
        scope = otelflow.current_scope()
        cached = self._carrier
        if cached is not None and cached[0] == tel.run_id and cached[1] == scope:
            carrier = cached[2]
        else:
            c = toolkit.carrier(telemetry=tel)
            carrier = c.to_dict() if c is not None else {}
            carrier.pop("traceparent", None)  # each task's own is derived on the worker
            self._carrier = (tel.run_id, scope, carrier)
        self._sent += 1
        return {
            "c": self.client_id,
            "q": self._sent,
            "s": scope.to_dict() if scope is not None else None,
            "k": carrier,
            "l": bool(getattr(tel.settings, "capture_logs", False)),
        }

    def hello(self) -> None:
        """Tell the scheduler plugin to record this client's tasks."""
        self._client.log_event(CONTROL_TOPIC, {"op": "hello", "c": self.client_id})

    def flush(self, timeout: float = _FLUSH_TIMEOUT) -> bool:
        """Wait until every record the scheduler holds for this client has been applied."""
        if self._client.status not in ("running", "connecting"):
            return False
        token = next(self._tokens)
        done = self._flushed[token] = threading.Event()
        try:
            self._client.log_event(CONTROL_TOPIC, {"op": "flush", "c": self.client_id, "token": token})
            return done.wait(timeout)
        except Exception as exc:  # noqa: BLE001 - a lost scheduler: nothing more will come
            _log.debug("otelflow: flush of dask records failed: %s", exc)
            return False
        finally:
            self._flushed.pop(token, None)

    def finish(self) -> None:
        """Before the client closes: apply what is pending, then close what never ends."""
        # Graphs travel on the client's stream, control messages by RPC: first wait until
        # the scheduler plugin has seen the last graph (a graph with no tasks at all is
        # never acknowledged: hence the short bound), then flush.
        with self._ack:
            self._ack.wait_for(lambda: self._acked >= self._sent, timeout=2.0)
        self.flush()
        with self._lock:
            tel = self._tel()
            tasks, self._tasks = self._tasks, {}
            if tel is not None:
                for st in tasks.values():
                    self._tracker.canceled(st.tid, reason="the dask client closed before the task finished")

    # -- records ------------------------------------------------------------------------------

    def handle(self, event: tuple[float, list[list[Any]]]) -> None:
        """Apply one message of records (the client's topic handler)."""
        recs = event[1]
        with self._lock:
            tel = self._tel()
            if tel is not None and tel.run_id != self._run:
                self._run = tel.run_id  # a new run: tasks of the old one are not ours now
                self._tasks.clear()
                self._done.clear()
            ops = self._ops
            for rec in recs:
                op = rec[0]
                if op == "Z":
                    done = self._flushed.get(rec[1])
                    if done is not None:
                        done.set()
                    continue
                if op == "G":
                    with self._ack:
                        self._acked = max(self._acked, rec[1])
                        self._ack.notify_all()
                    continue
                if tel is None:
                    continue
                try:
                    ops[op](tel, rec)
                except Exception as exc:  # noqa: BLE001 - one bad record must not stop the rest
                    self.errors[op] = self.errors.get(op, 0) + 1
                    if sum(self.errors.values()) == 1:
                        _log.warning("otelflow: a dask record %r could not be applied: %r", op, exc)

    def _created(self, tel: Telemetry, rec: list[Any]) -> None:
        _, key, name, deps, scope, t = rec
        if key in self._tasks:
            return
        # A key computed again after it finished in this run (Dask reuses the key) is a
        # new task: its id gets a suffix, so task ids (and span ids) stay unique.
        n = self._done.get(key, 0) + 1
        tid = key if n == 1 else f"{key}#{n}"
        if deps and self._done:
            deps = [self._id_of(d) for d in deps]
        ref = toolkit.ScopeRef.from_dict(scope) if scope else None
        with otelflow.adopt_scope(ref):
            self._tracker.created(tid, name, depends_on=deps, event_time=t)
        self._tasks[key] = _Task(tid, n, name, ref)

    def _id_of(self, key: str) -> str:
        st = self._tasks.get(key)
        if st is not None:
            return st.tid
        n = self._done.get(key, 1)
        return key if n == 1 else f"{key}#{n}"

    def _finished(self, key: str) -> _Task | None:
        st = self._tasks.pop(key, None)
        if st is not None:
            done = self._done
            done[key] = st.n
            done.move_to_end(key)
            if len(done) > _RECENT:
                done.popitem(last=False)
        return st

    def _queued(self, tel: Telemetry, rec: list[Any]) -> None:
        st = self._tasks.get(rec[1])
        if st is not None and not st.queued:
            st.queued = True
            self._tracker.queued(st.tid, event_time=rec[2])

    def _processing(self, tel: Telemetry, rec: list[Any]) -> None:
        st = self._tasks.get(rec[1])
        if st is None:
            return
        st.worker = rec[3]
        if not st.submitted:
            st.submitted = True
            self._tracker.submitted(st.tid, event_time=rec[2])

    def _began(self, tel: Telemetry, rec: list[Any]) -> None:
        _, tid, _run_id, t, worker, pid = rec
        st = self._tasks.get(tid)
        if st is None:
            return
        st.start = t
        st.worker = worker
        if not st.started:
            st.started = True
            self._tracker.started(st.tid, event_time=t, worker=worker, pid=pid)

    def _ended(self, tel: Telemetry, rec: list[Any]) -> None:
        tid = rec[1]
        st = self._tasks.get(tid)
        if st is None:
            return
        start, end = rec[2], rec[3]
        st.start = start
        # (start, end, error type, message, stacktrace, breakdown)
        st.last = (start, end, *rec[4:8]) if len(rec) > 4 else (start, end, None, None, None, None)
        if not st.started:
            st.started = True
            self._tracker.started(st.tid, event_time=start, worker=st.worker)

    def _released(self, tel: Telemetry, rec: list[Any]) -> None:
        # The attempt on a worker ended without a result: a lost worker, a retry, a cancel.
        _, tid, t, stimulus = rec
        st = self._tasks.get(tid)
        if st is None:
            return
        last = st.last
        if last is not None and last[2]:
            outcome = f"failed: {last[2]}"
        elif "worker" in stimulus:  # handle-worker-cleanup-…, remove-worker-…
            outcome = "worker-lost"
        else:
            outcome = "released"
        self._attempt(tel, st, outcome, last[1] if last is not None else t)
        st.attempt += 1
        st.start = None
        st.last = None

    def _attempt(self, tel: Telemetry, st: _Task, outcome: str, end: int) -> None:
        _task_event(
            tel, TaskAttempt, st, end,
            attempt=st.attempt, worker=st.worker, start_time=st.start, end_time=end, outcome=outcome,
        )  # fmt: skip

    def _memory(self, tel: Telemetry, rec: list[Any]) -> None:
        _, key, t, worker, c_start, c_stop = rec
        st = self._finished(key)
        if st is None:
            return
        last = st.last
        end = last[1] if last is not None else (c_stop or t)
        if not st.started and (c_start or last is not None):
            self._tracker.started(st.tid, event_time=c_start, worker=worker)
        if st.attempt > 1:
            self._attempt(tel, st, "completed", end)
        if last is not None and last[5]:
            _task_event(tel, TaskTimes, st, end, worker=st.worker, seconds=last[5])
        self._tracker.completed(st.tid, event_time=end)

    def _erred(self, tel: Telemetry, rec: list[Any]) -> None:
        _, key, t, etype, text, tb, cause = rec
        st = self._finished(key)
        if st is None:
            return
        if cause is not None:  # never ran: an upstream task failed
            msg = f"upstream task {self._id_of(cause)} failed: {text}"
            self._tracker.failed(st.tid, etype, event_time=t, message=msg)
            return
        last = st.last
        end = t
        if last is not None:
            end = last[1]
            etype = last[2] or etype
            text = last[3] or text
            tb = last[4] or tb
        if st.attempt > 1:
            self._attempt(tel, st, f"failed: {etype}", end)
        self._tracker.failed(st.tid, etype, event_time=end, message=text, stacktrace=tb or None)

    def _forgotten(self, tel: Telemetry, rec: list[Any]) -> None:
        st = self._finished(rec[1])
        if st is not None:
            self._tracker.canceled(st.tid, event_time=rec[2], reason="released before it finished")

    def _stolen(self, tel: Telemetry, rec: list[Any]) -> None:
        _, tid, t, victim, thief = rec
        st = self._tasks.get(tid)
        if st is None:
            return
        st.worker = thief
        _task_event(tel, TaskStolen, st, t, victim=victim or "", thief=thief or "")

    def _resources(self, tel: Telemetry, rec: list[Any]) -> None:
        _, addr, t, cpu, mem, limit, pid, gpu = rec
        tel.emit(
            ResourceUpdate(
                event_time=t,
                session_id=tel.session_id,
                scope="process",
                node=addr,
                device="dask-worker",
                cpu_utilization=cpu / 100.0 if cpu is not None else None,
                memory_used_bytes=int(mem) if mem is not None else None,
                memory_total_bytes=int(limit) if limit else None,
                memory_utilization=(mem / limit) if mem is not None and limit else None,
                pid=pid or None,
            )
        )
        if gpu:
            util = gpu.get("utilization")
            gmem = gpu.get("memory")
            tel.emit(
                ResourceUpdate(
                    event_time=t,
                    session_id=tel.session_id,
                    scope="gpu",
                    node=addr,
                    device="0",
                    gpu_utilization=util / 100.0 if util is not None else None,
                    memory_used_bytes=int(gmem) if gmem is not None else None,
                )
            )

    def _jsonl(self, tel: Telemetry, rec: list[Any]) -> None:
        toolkit.ingest(rec[2], rec[1], telemetry=tel)


def _task_event(tel: Telemetry, cls: Any, st: _Task, t: int, **fields: Any) -> None:
    """Emit one of the Dask events of :mod:`._events` on task ``st`` (its span, its scope)."""
    ref = st.scope
    tel.emit(
        cls(
            event_time=t,
            task_id=st.tid,
            task_name=st.name,
            session_id=tel.session_id,
            workflow_id=ref.workflow_id if ref is not None else None,
            block_id=ref.block_id if ref is not None else None,
            **fields,
        )
    )
