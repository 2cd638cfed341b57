"""The scheduler plugin: each tracked task's lifecycle, as Dask's scheduler sees it.

It runs in the scheduler process (in the client's own process for a ``LocalCluster``, in
``dask scheduler`` otherwise) and needs no telemetry there: it turns transitions into
compact records (:mod:`._protocol`) and sends them to the client that submitted the task.
Worker records arrive through :meth:`log_event` and are queued in the same per-client
list, so each client sees everything in the order the scheduler did.

When records are sent: at once after ``update_graph`` (so a task is created on the client
before any of its results can arrive there) and after every terminal transition (so a
result the user holds is recorded before the user can stop telemetry); everything else
rides along, or goes out with the next periodic flush.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado.ioloop import PeriodicCallback

from otelflow.integrations.dask._protocol import (
    ANNOTATION,
    CONTROL_TOPIC,
    SCHEDULER_PLUGIN,
    WORKER_TOPIC,
    client_topic,
    task_id_of,
)

if TYPE_CHECKING:
    from distributed import Scheduler

__all__ = ["SchedulerRecorder"]

_log = logging.getLogger("otelflow")
_now = time.time_ns
# Task names are metric attributes: past this many distinct key prefixes, new ones are
# recorded under one shared name.
_MAX_NAMES = 512
_OTHER_NAME = "dask-task"
_MAX_TEXT = 8192


class SchedulerRecorder(SchedulerPlugin):
    """Records the tasks of instrumented clients; registered by ``otelflow.instrument(client)``.

    Args:
        flush_interval: Seconds between periodic flushes of queued records.
        resource_interval: Seconds between per-worker resource samples (0 disables).
    """

    name = SCHEDULER_PLUGIN
    idempotent = True

    def __init__(self, flush_interval: float = 0.1, resource_interval: float = 1.0) -> None:
        self.flush_interval = flush_interval
        self.resource_interval = resource_interval
        self.scheduler: Scheduler | None = None
        self._clients: set[str] = set()
        self._owner: dict[Any, str] = {}  # key -> client id, until the task is done
        self._buf: dict[str, list[list[Any]]] = {}
        self._names: set[str] = set()
        self._callbacks: list[PeriodicCallback] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self._callbacks = [PeriodicCallback(self.flush, self.flush_interval * 1000)]
        if self.resource_interval > 0:
            self._callbacks.append(PeriodicCallback(self._tick, self.resource_interval * 1000))
        for cb in self._callbacks:
            cb.start()

    def _tick(self) -> None:
        self._sample()
        self.flush()

    async def before_close(self) -> None:
        self.flush()

    async def close(self) -> None:
        for cb in self._callbacks:
            cb.stop()
        self._callbacks = []

    def restart(self, scheduler: Scheduler) -> None:
        # Every task is forgotten on a restart; the clients stay registered.
        for key, client in list(self._owner.items()):
            self._add(client, ["X", task_id_of(key), _now()])
        self._owner.clear()
        self.flush()

    def remove_client(self, scheduler: Scheduler, client: str) -> None:
        self._clients.discard(client)
        self._buf.pop(client, None)

    # -- records -----------------------------------------------------------------------------

    def _add(self, client: str, rec: list[Any]) -> None:
        buf = self._buf.get(client)
        if buf is None:
            self._buf[client] = [rec]
        else:
            buf.append(rec)

    def flush(self, client: str | None = None) -> None:
        """Send queued records (of one client, or all) to their clients."""
        sched = self.scheduler
        if sched is None or not self._buf:
            return
        if client is None:
            bufs, self._buf = self._buf, {}
        else:
            one = self._buf.pop(client, None)
            if not one:
                return
            bufs = {client: one}
        for cid, recs in bufs.items():
            if cid in self._clients:
                try:
                    sched.log_event(client_topic(cid), recs)
                except Exception as exc:  # noqa: BLE001 - never break the scheduler
                    _log.debug("otelflow: could not send records to %s: %s", cid, exc)

    def update_graph(
        self,
        scheduler: Scheduler,
        *,
        client: str,
        keys: set[Any],
        tasks: list[Any],
        annotations: dict[str, dict[Any, Any]],
        **kwargs: Any,
    ) -> None:
        ours = annotations.get(ANNOTATION) or {}
        if client not in self._clients:
            if not ours:
                return
            # Only an instrumented client annotates: one whose hello this scheduler never
            # got (it restarted, and the client reconnected) is one all the same.
            self._clients.add(client)
        now = _now()
        all_tasks = scheduler.tasks
        owner = self._owner
        touched: set[str] = set()
        for key in tasks:
            ts = all_tasks.get(key)
            # Keys of an earlier graph (a persisted result used again) are not new tasks.
            if ts is None or key in owner or ts.state in ("memory", "erred"):
                continue
            ann = ours.get(key)
            cid = ann.get("c", client) if isinstance(ann, dict) else client
            if cid not in self._clients:
                continue
            owner[key] = cid
            touched.add(cid)
            deps = [task_id_of(d.key) for d in ts.dependencies]
            scope = ann.get("s") if isinstance(ann, dict) else None
            self._add(cid, ["C", task_id_of(key), self._name(ts.prefix.name), deps, scope, now])
            # The initial transitions may already have happened (a task with nothing to
            # wait for): replay the state it is in now.
            state = ts.state
            if state in ("queued", "no-worker"):
                self._add(cid, ["Q", task_id_of(key), now])
            elif state == "processing" and ts.processing_on is not None:
                self._add(cid, ["P", task_id_of(key), now, ts.processing_on.address])
        # Acknowledge the graph (its sequence number from the client's annotation), so a
        # client closing right after submitting knows every task of it has been created.
        first = next(iter(ours.values()), None) if ours else None
        if isinstance(first, dict) and isinstance(first.get("q"), int) and first.get("c") in self._clients:
            self._add(first["c"], ["G", first["q"]])
            touched.add(first["c"])
        for cid in touched:
            self.flush(cid)

    def _name(self, prefix: str) -> str:
        names = self._names
        if prefix in names:
            return prefix
        if len(names) >= _MAX_NAMES:
            return _OTHER_NAME
        names.add(prefix)
        return prefix

    def transition(self, key: Any, start: str, finish: str, *args: Any, stimulus_id: str = "", **kwargs: Any) -> None:
        cid = self._owner.get(key)
        if cid is None:
            return
        try:
            self._transition(cid, key, start, finish, stimulus_id, kwargs)
        except Exception as exc:  # noqa: BLE001 - a plugin must never break a transition
            _log.debug("otelflow: transition %s->%s of %r not recorded: %s", start, finish, key, exc)

    def _transition(self, cid: str, key: Any, start: str, finish: str, stimulus_id: str, kw: dict[str, Any]) -> None:
        tid = task_id_of(key)
        now = _now()
        if finish == "processing":
            ts = self.scheduler.tasks.get(key) if self.scheduler is not None else None
            ws = ts.processing_on if ts is not None else None
            self._add(cid, ["P", tid, now, ws.address if ws is not None else None])
        elif finish in ("queued", "no-worker"):
            self._add(cid, ["Q", tid, now])
        elif finish == "memory":
            if start == "processing":
                compute = _compute_span(kw.get("startstops"))
                self._add(cid, ["M", tid, now, kw.get("worker"), *compute])
            else:  # scattered, or received from elsewhere: nothing ran
                self._add(cid, ["M", tid, now, None, None, None])
            del self._owner[key]
            self.flush(cid)
        elif finish == "erred":
            ts = self.scheduler.tasks.get(key) if self.scheduler is not None else None
            # A dependent of a failed task errs without running: Dask blames the upstream.
            blame = ts.exception_blame if ts is not None else None
            cause = kw.get("cause") or (blame.key if blame is not None else None)
            text = kw.get("exception_text") or (ts.exception_text if ts is not None else None)
            tb = kw.get("traceback_text") or (ts.traceback_text if ts is not None else None)
            if blame is not None and blame is not ts:
                text = text or blame.exception_text
                tb = tb or blame.traceback_text
            cause_id = task_id_of(cause) if cause is not None and cause != key else None
            text = text or ""
            self._add(cid, ["E", tid, now, _type_of(text), text[:_MAX_TEXT], (tb or "")[:_MAX_TEXT], cause_id])
            del self._owner[key]
            self.flush(cid)
        elif finish == "released" and start == "processing":
            self._add(cid, ["L", tid, now, stimulus_id])
        elif finish == "forgotten":
            self._add(cid, ["X", tid, now])
            del self._owner[key]
            self.flush(cid)

    # -- control messages and worker records ---------------------------------------------------

    def log_event(self, topic: str, msg: Any) -> None:
        try:
            if topic == WORKER_TOPIC:
                for cid, recs in msg.items():
                    if cid in self._clients:
                        buf = self._buf.get(cid)
                        if buf is None:
                            self._buf[cid] = list(recs)
                        else:
                            buf.extend(recs)
            elif topic == "stealing":
                self._stolen(msg)
            elif topic == CONTROL_TOPIC:
                self._control(msg)
        except Exception as exc:  # noqa: BLE001 - a bad message must not break the scheduler
            _log.debug("otelflow: ignored a %s message: %s", topic, exc)

    def _control(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        cid = msg.get("c")
        if not isinstance(cid, str):
            return
        if op == "hello":
            self._clients.add(cid)
            self._sample()  # every worker has a sample in every run, however short
        elif op == "bye":
            self.flush(cid)
            self._clients.discard(cid)
        elif op == "flush":
            self._sample()
            self._add(cid, ["Z", msg.get("token")])
            self.flush(cid)

    def _stolen(self, msg: Any) -> None:
        # ("confirm", key, state, victim, thief, stimulus_id): the task moved workers.
        if not isinstance(msg, (list, tuple)) or len(msg) < 5 or msg[0] != "confirm":
            return
        key = msg[1]
        if isinstance(key, list):
            key = tuple(key)
        cid = self._owner.get(key)
        if cid is not None:
            self._add(cid, ["S", task_id_of(key), _now(), msg[3], msg[4]])

    def _sample(self) -> None:
        sched = self.scheduler
        if sched is None or not self._clients:
            return
        now = _now()
        recs = []
        for addr, ws in list(sched.workers.items()):
            m = ws.metrics or {}
            gpu = m.get("gpu")
            if isinstance(gpu, dict):
                gpu = {"utilization": gpu.get("utilization"), "memory": gpu.get("memory-used")}
            else:
                gpu = None
            recs.append(["U", addr, now, m.get("cpu"), m.get("memory"), ws.memory_limit or None, ws.pid, gpu])
        for cid in self._clients:
            self._buf.setdefault(cid, []).extend(recs)


def _compute_span(startstops: Any) -> tuple[int | None, int | None]:
    """The compute start/stop (ns, scheduler clock) from Dask's ``startstops``."""
    if startstops:
        for ss in startstops:
            if ss.get("action") == "compute":
                return int(ss["start"] * 1e9), int(ss["stop"] * 1e9)
    return None, None


def _type_of(exception_text: str) -> str:
    """The exception type from Dask's ``exception_text`` (``repr(exc)``), e.g. ``ValueError``."""
    head = exception_text.split("(", 1)[0].strip()
    if head == "KilledWorker":
        return "distributed.scheduler.KilledWorker"
    return head if head.replace(".", "").replace("_", "").isalnum() else "Exception"
