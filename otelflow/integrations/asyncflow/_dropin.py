"""A drop-in for ``await flow.start_telemetry()`` (the RHAPSODY telemetry layer, "TAL").

Subscribers written against the TAL keep working: they get :class:`TALEvent` objects with
the TAL's field names (``event_type``, ``task_id``, ``event_time`` in seconds,
``duration_seconds``, ``error_type``, ``cpu_percent`` …), on the event loop, sync or async,
while otelflow records the run. Events made with ``rhapsody.telemetry.define_event`` and
``make_event`` can be passed to :meth:`AsyncFlowTelemetry.emit`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import otelflow
from otelflow.events.model import (
    ResourceUpdate,
    SessionEnded,
    TaskCanceled,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskStarted,
)
from otelflow.integrations.asyncflow import _engine

if TYPE_CHECKING:
    from otelflow.bus.subscribers import Subscriber
    from otelflow.events.model import Event
    from otelflow.run_summary import Summary
    from otelflow.session import Telemetry

__all__ = ["AsyncFlowTelemetry", "TALEvent", "start_telemetry"]

_log = logging.getLogger("otelflow")

# otelflow name -> the TAL's, for the names that differ.
_TAL_NAMES = {"TaskResolved": "asyncflow.TaskResolved"}
_TERMINAL = (TaskCompleted, TaskFailed, TaskCanceled)
# The TAL's BaseEvent fields; everything else on a TAL event is the event's own.
_TAL_BASE = frozenset(
    ("event_id", "event_type", "event_time", "emit_time", "session_id", "backend", "task_id", "node_id", "attributes")
)
_SCALAR = str | int | float | bool | None


class TALEvent:
    """One otelflow event as a TAL subscriber sees it (read-only).

    Attributes:
        event_type: The TAL's name (``TaskCompleted``, ``asyncflow.TaskResolved`` …).
        event_time: When it happened, seconds since the epoch (float), as in the TAL.
        emit_time: When it entered the bus, seconds.
        task_id: AsyncFlow's task uid (``task.000001``), without otelflow's engine prefix.
        duration_seconds: Terminal events: execution (worker start → end), seconds.
        error_type: ``TaskFailed``: the exception's type name.
        attributes: ``executable``, ``task_type``, ``asyncflow.workflow_id`` (and
            ``depends_on`` on ``TaskCreated``), as in the TAL.
        otelflow_event: The otelflow event it was made from.

    ``ResourceUpdate`` has ``cpu_percent``, ``memory_percent``, ``gpu_percent`` (0–100),
    ``gpu_id``, ``node_id``, ``resource_scope`` (``per_node``/``per_gpu``) and the disk
    and network byte deltas. Any other field of the otelflow event is readable by name.
    """

    __slots__ = ("__dict__", "otelflow_event")

    def __init__(self, event: Event, fields: dict[str, Any]) -> None:
        self.otelflow_event = event
        self.__dict__.update(fields)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not set above: fall back to the otelflow event's fields.
        try:
            return getattr(object.__getattribute__(self, "otelflow_event"), name)
        except AttributeError:
            raise AttributeError(f"TAL event {self.__dict__.get('event_type')!r} has no field {name!r}") from None

    def __repr__(self) -> str:
        return f"TALEvent({self.__dict__.get('event_type')!r}, task_id={self.__dict__.get('task_id')!r})"


class _Converter:
    """otelflow events → :class:`TALEvent`; remembers start times for ``duration_seconds``."""

    def __init__(self, prefix: str, backend: str) -> None:
        self.prefix = prefix
        self.backend = backend
        self.started: dict[str, int] = {}
        self.names: dict[str, str] = {}

    def strip(self, tid: str | None) -> str | None:
        if tid is not None and tid.startswith(self.prefix):
            return tid[len(self.prefix) :]
        return tid

    def __call__(self, ev: Event) -> TALEvent | None:
        name = ev.event_name
        if isinstance(ev, ResourceUpdate) and ev.scope == "process":
            return None  # the TAL samples nodes and GPUs only
        tid = ev.task_id
        f: dict[str, Any] = {
            "event_id": f"{ev.event_id:016x}",
            "event_type": _TAL_NAMES.get(name, name),
            "event_time": ev.event_time / 1e9,
            "emit_time": ev.emit_time / 1e9,
            "session_id": ev.session_id,
            "backend": self.backend if tid is not None else "rhapsody",
            "task_id": self.strip(tid),
            "node_id": None,
        }
        attrs: dict[str, Any] = {}
        if tid is not None:
            exe = ev.task_name or self.names.get(tid, "")
            attrs["executable"] = exe
            wf = ev.workflow_id
            blk = self.strip(ev.block_id)
            if blk is not None or wf is not None:
                attrs["asyncflow.workflow_id"] = blk or wf  # the TAL labels a block's tasks with the block
            if isinstance(ev, TaskCreated):
                a = ev.attributes or {}
                attrs["task_type"] = a.get("asyncflow.task_type", "function")
                attrs["depends_on"] = [self.strip(d) for d in ev.depends_on]
                if ev.task_name:
                    self.names[tid] = ev.task_name
            else:
                attrs["task_type"] = "function"
        if isinstance(ev, TaskStarted) and tid is not None:
            self.started[tid] = ev.event_time
        elif isinstance(ev, _TERMINAL) and tid is not None:
            start = self.started.pop(tid, None)
            self.names.pop(tid, None)
            if start is None:
                f["duration_seconds"] = 0.0
                attrs["incomplete_lifecycle"] = True
            else:
                f["duration_seconds"] = max(0, ev.event_time - start) / 1e9
            if isinstance(ev, TaskFailed):
                f["error_type"] = ev.error_type
                attrs["error_type"] = ev.error_type
        elif isinstance(ev, ResourceUpdate):
            gpu = ev.device if ev.scope == "gpu" else None

            def pct(v: float | None) -> float | None:
                return None if v is None else round(v * 100.0, 3)

            f.update(
                node_id=ev.node,
                cpu_percent=pct(ev.cpu_utilization),
                memory_percent=pct(ev.memory_utilization),
                gpu_percent=pct(ev.gpu_utilization),
                gpu_id=int(gpu) if gpu is not None and str(gpu).isdigit() else None,
                disk_read_bytes=ev.disk_read_bytes,
                disk_write_bytes=ev.disk_write_bytes,
                net_sent_bytes=ev.net_sent_bytes,
                net_recv_bytes=ev.net_recv_bytes,
                resource_scope="per_gpu" if gpu is not None else "per_node",
            )
        elif isinstance(ev, SessionEnded):
            f["duration_seconds"] = 0.0
        f["attributes"] = attrs
        return TALEvent(ev, f)


class AsyncFlowTelemetry:
    """What :func:`start_telemetry` returns: the TAL manager's surface, backed by otelflow.

    Attributes:
        telemetry: The otelflow :class:`~otelflow.Telemetry` recording the run.
        session_id: The session id: the engine's uid, as in the TAL.
    """

    def __init__(self, flow: Any, telemetry: Telemetry, owned: bool, loop: asyncio.AbstractEventLoop) -> None:
        self.telemetry = telemetry
        self.session_id: str = telemetry.session_id
        self._session_id = self.session_id  # the TAL's spelling, used in its own docs' examples
        self._flow_uid = str(flow.uid)
        self._owned = owned
        self._loop = loop
        self._callbacks: list[Callable[[Any], Any]] = []
        self._sub: Subscriber | None = None
        self._pending: deque[TALEvent] = deque()
        self._scheduled = False
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._convert = _Converter(f"{flow.uid}:", str(getattr(flow.backend, "name", "")))
        self._event_classes: dict[str, type[Event]] = {}
        self._stopped: Summary | None = None
        self.subscriber_errors = 0

    # -- subscribe -----------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Any], Any]) -> None:
        """Call ``callback(event)`` for every event, on the event loop (sync or ``async def``).

        Events are :class:`TALEvent` objects. A callback that raises is logged once and
        counted in ``subscriber_errors``; it never stops the others.
        """
        if not callable(callback):
            raise TypeError(f"subscribe() needs a callable, not {callback!r}.")
        self._callbacks.append(callback)
        if self._sub is None and self.telemetry.active:
            self._sub = self.telemetry.subscribe(self._on_event)

    def _on_event(self, ev: Event) -> None:
        """otelflow's subscriber thread: convert, then hand over to the loop in batches."""
        view = self._convert(ev)
        if view is None:
            return
        with self._lock:
            self._pending.append(view)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._fanout)
        except RuntimeError:  # the loop is closed: nobody is left to deliver to
            with self._lock:
                self._scheduled = False

    def _fanout(self) -> None:
        """On the loop: deliver what is pending to every callback, like the TAL's dispatch."""
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
            self._scheduled = False
        for view in batch:
            for cb in self._callbacks:
                try:
                    if asyncio.iscoroutinefunction(cb):
                        t = self._loop.create_task(cb(view))
                        self._tasks.add(t)
                        t.add_done_callback(self._task_done)
                    else:
                        cb(view)
                except Exception as exc:  # noqa: BLE001 - a subscriber never breaks delivery
                    self._sub_error(cb, exc)

    def _task_done(self, t: asyncio.Task[Any]) -> None:
        self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            self._sub_error(t, t.exception())  # type: ignore[arg-type]

    def _sub_error(self, cb: Any, exc: BaseException) -> None:
        self.subscriber_errors += 1
        if self.subscriber_errors == 1:
            _log.warning(
                "otelflow: a TAL subscriber raised %s: %s (further errors are counted).", type(exc).__name__, exc
            )

    # -- emit ------------------------------------------------------------------------------------

    def emit(self, event: Any) -> bool:
        """Record an event: a TAL event (``rhapsody.telemetry`` ``make_event``) or an otelflow one.

        TAL events of a type made with ``define_event`` become otelflow user events of the
        same name and fields. Returns False if it was not recorded (the reason is logged once).
        """
        if isinstance(event, otelflow.Event):
            return self.telemetry.emit(event)
        if not dataclasses.is_dataclass(event) or not hasattr(event, "event_type"):
            _engine._warn_once(
                "emit-type",
                "otelflow: AsyncFlowTelemetry.emit() takes a rhapsody.telemetry event or an otelflow event, not %s.",
                type(event).__name__,
            )
            return False
        name = str(event.event_type)
        if "." not in name:
            # A TAL built-in (TaskStarted …): otelflow records those from the engine itself.
            _engine._warn_once(
                f"emit-builtin:{name}",
                "otelflow: emit() of the TAL's own %s is ignored: otelflow records task lifecycles from the engine.",
                name,
            )
            return False
        try:
            cls = self._event_class(name, event)
            own = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)
                   if f.name not in _TAL_BASE and f.init}  # fmt: skip
            tid = getattr(event, "task_id", None)
            t = getattr(event, "event_time", None)
            ev = cls(  # type: ignore[call-arg]
                **own,
                tal_attributes=_scalars(getattr(event, "attributes", None) or {}),
                event_time=round(t * 1e9) if isinstance(t, (int, float)) else 0,
                task_id=f"{self._flow_uid}:{tid}" if tid and not str(tid).startswith(self._flow_uid) else tid,
            )
        except Exception as exc:  # noqa: BLE001 - emit() never raises into user code
            _engine._warn_once(f"emit:{name}", "otelflow: could not record TAL event %s: %s", name, exc)
            return False
        return self.telemetry.emit(ev)

    def _event_class(self, name: str, event: Any) -> type[Event]:
        cls = self._event_classes.get(name)
        if cls is None:
            fields: dict[str, Any] = {}
            for f in dataclasses.fields(event):
                if f.name in _TAL_BASE or not f.init:
                    continue
                typ = f.type if f.type in (str, int, float, bool) else _SCALAR
                default = f.default if f.default is not dataclasses.MISSING else None
                fields[f.name] = (typ | None if typ is not _SCALAR else typ, default)
            fields["tal_attributes"] = (dict[str, _SCALAR], {})
            cls = otelflow.define_event(name, **fields)
            self._event_classes[name] = cls
        return cls

    # -- the TAL's read side ---------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The TAL summary's keys (``tasks``, ``duration.mean_seconds`` …) from otelflow's.

        ``duration`` is execution time measured in the worker (the TAL's was creation → end);
        ``otelflow`` holds otelflow's whole summary.
        """
        s: dict[str, Any] = dict(self._stopped or self.telemetry.summary())
        tasks = s.get("tasks") or {}
        dur: dict[str, Any] = s.get("duration_s") or {}
        n = dur.get("count") or 0
        duration: dict[str, float] = {}
        if n:
            duration = {
                "total_seconds": round(dur["mean"] * n, 6),
                "mean_seconds": round(dur["mean"], 6),
                "min_seconds": round(dur["min"], 6),
                "max_seconds": round(dur["max"], 6),
            }
        resources: dict[str, Any] = {}
        for key, r in (s.get("resources") or {}).items():
            if not key.startswith("node:"):
                continue
            node = key.split(":", 1)[1]

            def pct(v: Any) -> float | None:
                return round(v * 100.0, 3) if isinstance(v, (int, float)) else None

            resources[f"{self._convert.backend}/{node}"] = {
                "backend": self._convert.backend,
                "node_id": node,
                "cpu_percent": pct(r.get("cpu_utilization")),
                "memory_percent": pct(r.get("memory_utilization")),
                "gpu_percent": pct(r.get("gpu_utilization")),
            }
        return {
            "session_id": self.session_id,
            "duration_seconds": round(float(s.get("elapsed_s") or 0.0), 6),
            "tasks": {
                "submitted": int(tasks.get("submitted", 0)),
                "completed": int(tasks.get("completed", 0)),
                "failed": int(tasks.get("failed", 0)),
                "canceled": int(tasks.get("canceled", 0)),
                "running": int(tasks.get("running", 0)),
            },
            "duration": duration,
            "resources": resources,
            "otelflow": s,
        }

    def task_count(self) -> dict[str, int]:
        """``summary()["tasks"]``."""
        return dict(self.summary()["tasks"])

    def session_duration(self) -> float:
        """Seconds since the session started (final after :meth:`stop`)."""
        return float(self.summary()["duration_seconds"])

    # -- stop --------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop (if this started the telemetry), deliver what is pending to subscribers.

        Idempotent; ``flow.shutdown()`` calls it too.
        """
        if self._stopped is not None:
            return
        if self._owned:
            self._stopped = await self.telemetry.astop()
        else:
            await asyncio.to_thread(self.telemetry.flush)
            if self._sub is not None:
                self.telemetry.unsubscribe(self._sub)  # its queued events are still delivered
            self._stopped = self.telemetry.summary()
        self._fanout()  # what the subscriber thread handed over last
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10.0)


def _scalars(d: dict[str, Any]) -> dict[str, str | int | float | bool | None]:
    out: dict[str, str | int | float | bool | None] = {}
    for k, v in d.items():
        out[str(k)] = v if v is None or isinstance(v, (str, int, float, bool)) else str(v)
    return out


async def start_telemetry(
    flow: Any,
    resource_poll_interval: float = 5.0,
    checkpoint_interval: float | None = None,
    checkpoint_path: str | None = None,
    span_processors: Sequence[Any] | None = None,
    metric_readers: Sequence[Any] | None = None,
    resource: Any = None,
    **options: Any,
) -> AsyncFlowTelemetry:
    """``await flow.start_telemetry(...)``, recorded by otelflow instead of the TAL.

    Takes the TAL's arguments. ``checkpoint_path`` is otelflow's runs directory (each run
    gets ``<checkpoint_path>/<run-id>/``); None writes no files, as in the TAL. If otelflow
    telemetry already runs in this process, the flow is recorded on it and :meth:`stop`
    leaves it running. ``flow.shutdown()`` stops what this started.

    Returns:
        An :class:`AsyncFlowTelemetry` with the TAL manager's ``subscribe``, ``emit``,
        ``session_id``, ``summary()`` and ``await stop()``.
    """
    loop = asyncio.get_running_loop()
    tel = otelflow.current_telemetry()
    owned = tel is None or not tel.active
    if owned:
        if checkpoint_path is None:
            options.setdefault("jsonl", False)
        tel = otelflow.Telemetry(
            checkpoint_path=checkpoint_path,
            resource_poll_interval=resource_poll_interval,
            checkpoint_interval=checkpoint_interval,
            span_processors=tuple(span_processors or ()),
            metric_readers=tuple(metric_readers or ()),
            resource=resource,
            session_id=str(flow.uid),
            **options,
        ).start()
    else:
        _log.info("otelflow: telemetry already runs (run %s); recording %s on it.", tel.run_id, flow.uid)  # type: ignore[union-attr]
    assert tel is not None
    mgr = AsyncFlowTelemetry(flow, tel, owned, loop)
    if not _engine.is_instrumented(flow):
        _engine.instrument(flow, telemetry=tel)
    if owned:
        _engine.add_closer(flow, mgr.stop)
    return mgr
