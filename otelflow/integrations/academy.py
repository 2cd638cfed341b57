"""Record Academy agents: each action call a task, each agent's lifetime a scope span.

Use::

    with otelflow.start_telemetry():
        log_config = OtelflowLogConfig()             # made where telemetry runs
        async with await Manager.from_exchange_factory(
            factory, executors=ProcessPoolExecutor(2), log_config=log_config
        ) as manager:
            coordinator = await manager.launch(Coordinator, args=(adder,))
            print(await coordinator.fib(5))

Academy's plug point for this is its ``LogConfig``: the ``Manager`` initializes it in the
submitting process and carries it (pickled) into every agent's process. There,
:class:`OtelflowLogConfig` is a *visitor*: it joins the otelflow run (the worker session
of :func:`otelflow.toolkit.join_run`), reads the structured records Academy already logs
(``academy.action_state``, ``academy.action_tag``, ``academy.action`` …) through one filter
on Academy's own loggers, and removes exactly what it added when Academy uninitializes it.
Other handlers see the same records as without it (see :class:`_Tap`).

Every action call is one task keyed by the request's message tag, so the requesting side
and the agent side meet without a shared id space:

* created when the handle starts the call, submitted when the ActionRequest is sent (the
  requester's times), in the requester's scope, under the requester's current span (an
  action calling another agent's action is its parent);
* started and ended when the agent runs it — the agent's own times;
* completed or failed when the ActionResponse arrives (the exception type, message and
  stack trace come from the agent).

The task's span id derives from the run's trace id and the tag, so the agent makes that
span current while the action runs and the spans, events and logs made inside nest under
it. Each task carries ``otelflow.phase.{send,queue,execution,response}_s``: ``otelflow
report`` shows them per action. All steps are reported to the submitting process (one
loopback TCP connection per agent process, opened by otelflow itself), which records the
task once.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import queue
import selectors
import socket
import threading
import time
import traceback
from typing import Any

from academy.logging.configs.base import LogConfig
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace

import otelflow
from otelflow import toolkit

__all__ = ["OtelflowLogConfig"]

_log = logging.getLogger("otelflow")

_LOGGERS = ("academy.handle", "academy.runtime", "academy.manager")
_HOST = socket.gethostname()
_GRACE_NS = 5_000_000_000  # wait this long for the agent's end step after the response
_MAX_LINE = 64 * 1024


def _ns(record: logging.LogRecord) -> int:
    return int(record.created * 1e9)


def _uid(entity: Any) -> str | None:
    uid = getattr(entity, "uid", None)
    return str(uid) if uid is not None else (str(entity) if entity is not None else None)


class OtelflowLogConfig(LogConfig):
    """An Academy ``LogConfig`` that records agents and their actions in the otelflow run.

    Make it in the process where telemetry runs, and pass it to ``Manager(...,
    log_config=...)`` (or ``Manager.launch(..., log_config=...)``; combine it with your own
    config through Academy's ``MultiLogging``). It changes no handler of yours and no log
    file: what it adds (a filter on Academy's loggers, and in agent processes
    ``otelflow.capture_logging()``'s handler on the root logger) it removes when Academy
    uninitializes it.

    Args:
        telemetry: The session to record on; by default the current one. Without running
            telemetry the config does nothing.
        capture_logs: In agent processes, also capture log records (level ``level`` and
            above) into the run as wide log events (``otelflow.capture_logging``), each
            carrying the running action's trace and span ids.
        level: Lowest level captured by ``capture_logs``.
    """

    def __init__(self, *, telemetry: Any = None, capture_logs: bool = True, level: int = logging.INFO) -> None:
        super().__init__()
        tel = telemetry if telemetry is not None else otelflow.current_telemetry()
        self.carrier = toolkit.carrier(telemetry=tel) if tel is not None else None
        self.capture_logs = capture_logs
        self.level = level
        self.address: tuple[str, int] | None = None
        self._collector: _Collector | None = None
        if self.carrier is not None:
            self._collector = _Collector(tel, self.carrier)
            self.address = self._collector.address

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_collector"] = None  # lives in the submitting process only
        return state

    def init_logging(self) -> Any:
        """Start visiting this process (called by Academy's ``log_context``)."""
        if self.carrier is None:
            return _noop
        try:
            visitor = _Visitor(self)
        except Exception as exc:  # noqa: BLE001 - never break the agent's start
            _log.warning("otelflow could not record Academy in process %d (%s).", os.getpid(), exc)
            return _noop
        return visitor.uninstall

    def close(self) -> None:
        """Record what is still pending and stop listening (also done at uninitialization)."""
        if self._collector is not None:
            self._collector.close()

    def __repr__(self) -> str:
        return f"<OtelflowLogConfig run={self.carrier.run_id if self.carrier else None}>"


def _noop() -> None:
    return None


# --- in every process: read Academy's records ------------------------------------------------


class _Visitor:
    """What one process added for an :class:`OtelflowLogConfig`, and how to take it away."""

    def __init__(self, config: OtelflowLogConfig) -> None:
        carrier = config.carrier
        assert carrier is not None
        self.carrier = carrier
        collector = config._collector
        self.capture: Any = None  # otelflow.capture_logging's handle, in agent processes
        if collector is not None:  # the submitting process: record directly
            self.sink: Any = collector.put
            self.sender: _Sender | None = None
        else:
            tel = toolkit.join_run(carrier)
            if tel is not None and config.capture_logs:  # wide log events, on the root logger
                self.capture = otelflow.capture_logging(level=config.level, telemetry=tel)
            self.sender = _Sender(config.address) if config.address is not None else None
            self.sink = self.sender.put if self.sender is not None else _noop_put
        self.running: dict[str, Any] = {}  # tag -> entered task_context, while the action runs
        self.taps: list[tuple[logging.Logger, _Tap, int]] = []
        for name in _LOGGERS:
            lg = logging.getLogger(name)
            tap = _Tap(self, lg)
            self.taps.append((lg, tap, lg.level))
            lg.addFilter(tap)
            lg.setLevel(logging.DEBUG)  # Academy's action records are DEBUG; _Tap hides them again

    def uninstall(self) -> None:
        for lg, tap, level in self.taps:
            lg.removeFilter(tap)
            lg.setLevel(level)
        self.taps = []
        if self.capture is not None:
            self.capture.stop()
        if self.sender is not None:
            self.sender.close()
        with contextlib.suppress(Exception):
            toolkit.flush_worker()
        collector = getattr(self.sink, "__self__", None)
        if isinstance(collector, _Collector):
            collector.close()

    # -- one Academy record --------------------------------------------------------------------

    def observe(self, record: logging.LogRecord) -> None:
        d = record.__dict__
        state = d.get("academy.action_state")
        if state is not None:
            tag = str(d.get("academy.action_tag"))
            t = _ns(record)
            if state == "start":
                self.sink(["C", tag, str(d.get("academy.action")), t, _uid(d.get("academy.agent_id")), *self._caller()])
            elif state == "sending":
                self.sink(["S", tag, t])
            elif state in ("success", "exception", "cancelled"):
                self.sink(["R", tag, t, state])
            elif state == "execute_start":
                cm = toolkit.task_context(self.carrier, tag)
                cm.__enter__()  # in the action's own asyncio task: only it sees the span
                self.running[tag] = cm
                self.sink(["X0", tag, t, os.getpid(), _HOST])
            elif state.startswith("execute_"):
                cm = self.running.pop(tag, None)
                if cm is not None:
                    with contextlib.suppress(Exception):
                        cm.__exit__(None, None, None)
                self.sink(["X1", tag, t, state, *_error(record)])
            return
        msg = record.msg if isinstance(record.msg, str) else ""
        if msg.startswith("Starting agent"):
            agent = d.get("academy.agent")
            self.sink(["A0", _uid(d.get("academy.agent_id")), type(agent).__name__, _ns(record)])
        elif msg.startswith("Shutdown agent"):
            self.sink(["A1", _uid(d.get("academy.agent_id")), _ns(record)])
        elif msg.startswith("Launched agent"):
            scope = otelflow.current_scope()
            self.sink(["L", _uid(d.get("academy.agent_id")), scope.to_dict() if scope is not None else None])

    def _caller(self) -> list[Any]:
        """The requester's current span (if it is the run's) and scope."""
        ctx = otel_trace.get_current_span().get_span_context()
        parent = f"{ctx.span_id:016x}" if ctx.is_valid and f"{ctx.trace_id:032x}" == self.carrier.trace_id else None
        scope = otelflow.current_scope()
        return [parent, scope.to_dict() if scope is not None else None]


def _noop_put(item: list[Any]) -> None:
    return None


def _error(record: logging.LogRecord) -> list[Any]:
    info = record.exc_info
    if not info or info[1] is None:
        return [None, None, None]
    exc = info[1]
    tp = type(exc)
    name = tp.__qualname__ if tp.__module__ in ("builtins", "__main__") else f"{tp.__module__}.{tp.__qualname__}"
    try:
        message = str(exc)[:2000]
    except Exception:  # noqa: BLE001 - a broken __str__
        message = "<unprintable>"
    stack = "".join(traceback.format_exception(tp, exc, info[2]))[-8192:]
    return [name, message, stack]


class _Tap(logging.Filter):
    """A filter on one Academy logger: reads every record, lets through what it would have.

    The logger's level is lowered to DEBUG so Academy's action records exist at all; this
    filter then drops, for everyone else, the records below the level the logger had (its
    own, else its parent's effective level), so other handlers see exactly what they saw.
    """

    def __init__(self, visitor: _Visitor, logger: logging.Logger) -> None:
        super().__init__()
        self.visitor = visitor
        self.logger = logger
        self.level = logger.level
        self.errors = 0

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self.visitor.observe(record)
        except Exception:  # noqa: BLE001 - logging must never break Academy
            self.errors += 1
        level = self.level
        if level == logging.NOTSET:
            parent = self.logger.parent
            level = parent.getEffectiveLevel() if parent is not None else logging.WARNING
        return record.levelno >= level


# --- agent processes: send the steps home ----------------------------------------------------


class _Sender:
    """Sends steps to the submitting process's collector from a background thread."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.queue: queue.SimpleQueue[list[Any] | None] = queue.SimpleQueue()
        self.lost = 0
        self.thread = threading.Thread(target=self._run, name="otelflow-academy-sender", daemon=True)
        self.thread.start()

    def put(self, item: list[Any]) -> None:
        self.queue.put(item)

    def close(self, timeout: float = 5.0) -> None:
        self.queue.put(None)
        self.thread.join(timeout)

    def _run(self) -> None:
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((str(self.address[0]), int(self.address[1])), timeout=10)
        except OSError as exc:
            _log.warning("otelflow: Academy steps cannot reach the submitting process (%s); they are lost.", exc)
        while True:
            item = self.queue.get()
            batch = [item]
            while item is not None:  # drain what is there: one send for a burst
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
            items = [i for i in batch if i is not None]
            if items:
                if sock is None:
                    self.lost += len(items)
                else:
                    try:
                        sock.sendall(b"".join(json.dumps(i).encode() + b"\n" for i in items))
                    except OSError:
                        self.lost += len(items)
                        sock = None
            if batch[-1] is None:
                break
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


# --- the submitting process: record the tasks ------------------------------------------------


class _Action:
    __slots__ = ("created", "end", "error", "executed", "response", "sent", "started", "state", "tid")

    def __init__(self, tid: str) -> None:
        self.tid = tid
        self.created = self.sent = self.started = self.end = self.response = 0
        self.state: str | None = None
        self.executed: str | None = None
        self.error: list[Any] = [None, None, None]


class _Collector:
    """Receives every process's steps and records each action as one task (one thread)."""

    def __init__(self, telemetry: Any, carrier: toolkit.Carrier) -> None:
        self.trk = otelflow.tracker(backend="academy", telemetry=telemetry)
        self.carrier = carrier
        self.trace_id = int(carrier.trace_id, 16)
        self.lock = threading.Lock()
        self.actions: dict[str, _Action] = {}
        self.early: dict[str, list[list[Any]]] = {}  # steps that came before their "C"
        self.launch_scopes: dict[str, Any] = {}
        self.agents: dict[str, tuple[contextvars.Context, list[Any]]] = {}
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.setblocking(False)
        self.address: tuple[str, int] = self.server.getsockname()[:2]
        self.closed = False
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.server, selectors.EVENT_READ)
        self.thread = threading.Thread(target=self._serve, name="otelflow-academy-collector", daemon=True)
        self.thread.start()

    # -- network -----------------------------------------------------------------------------

    def _serve(self) -> None:
        buffers: dict[socket.socket, bytes] = {}
        while not self.closed:
            for key, _ in self.sel.select(timeout=0.2):
                sock = key.fileobj
                if sock is self.server:
                    with contextlib.suppress(OSError):
                        conn, _addr = self.server.accept()
                        conn.setblocking(False)
                        self.sel.register(conn, selectors.EVENT_READ)
                        buffers[conn] = b""
                    continue
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(sock)
                    sock.close()
                    buffers.pop(sock, None)
                    continue
                buf = buffers.get(sock, b"") + data
                *lines, rest = buf.split(b"\n")
                buffers[sock] = rest if len(rest) < _MAX_LINE else b""
                for line in lines:
                    try:
                        item = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(item, list):
                        self.put(item)
            self._sweep()
        for key in list(self.sel.get_map().values()):
            with contextlib.suppress(Exception):
                key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.thread.join(5)
        with self.lock:
            for act in list(self.actions.values()):
                if act.response:
                    self._finish(act)
            for aid in list(self.agents):
                self._agent_ended(aid)

    # -- steps -------------------------------------------------------------------------------

    def put(self, item: list[Any]) -> None:
        try:
            with self.lock:
                self._step(item)
        except Exception as exc:  # noqa: BLE001 - a malformed step must not stop the others
            _log.debug("otelflow ignored an Academy step %r: %s", item, exc)

    def _step(self, item: list[Any]) -> None:
        kind = item[0]
        if kind == "C":
            _, tid, action, t, agent, parent, scope = item
            self._created(tid, action, t, agent, parent, scope)
            for early in self.early.pop(tid, ()):
                self._step(early)
            return
        if kind in ("A0", "A1", "L"):
            if kind == "L":
                self.launch_scopes[item[1]] = item[2]
            elif kind == "A0":
                self._agent_started(item[1], item[2])
            else:
                self._agent_ended(item[1])
            return
        tid = item[1]
        act = self.actions.get(tid)
        if act is None:
            if len(self.early) < 10000:
                self.early.setdefault(tid, []).append(item)
            return
        t = item[2]
        if kind == "S":
            act.sent = t
            self.trk.submitted(tid, t)
        elif kind == "X0":
            act.started = t
            self.trk.started(tid, t, worker=f"{item[4]}:{item[3]}", pid=item[3])
        elif kind == "X1":
            act.end, act.executed, act.error = t, item[3], list(item[4:7])
            if act.response:
                self._finish(act)
        elif kind == "R":
            act.response, act.state = t, item[3]
            if act.end:  # else the agent's end step is still on its way (see _sweep)
                self._finish(act)

    def _created(self, tid: str, action: str, t: int, agent: str | None, parent: str | None, scope: Any) -> None:
        ref = toolkit.ScopeRef.from_dict(scope) if scope else None
        attrs: dict[str, str | int | float | bool] = {"academy.action": action, "academy.message_tag": tid}
        if agent:
            attrs["academy.agent_id"] = agent
        with otelflow.adopt_scope(ref):
            token = None
            if parent:
                span = otel_trace.NonRecordingSpan(
                    otel_trace.SpanContext(self.trace_id, int(parent, 16), True, otel_trace.TraceFlags(1))
                )
                token = otel_context.attach(otel_trace.set_span_in_context(span))
            try:
                self.trk.created(tid, action, attributes=attrs, event_time=t)
            finally:
                if token is not None:
                    otel_context.detach(token)
        self.actions[tid] = _Action(tid)
        self.actions[tid].created = t

    def _finish(self, act: _Action) -> None:
        self.actions.pop(act.tid, None)
        attrs: dict[str, str | int | float | bool] = {}
        for key, a, b in (
            ("send", act.created, act.sent),
            ("queue", act.sent, act.started),
            ("execution", act.started, act.end),
            ("response", act.end, act.response),
        ):
            if a and b:
                attrs[f"otelflow.phase.{key}_s"] = round((b - a) / 1e9, 6)
        end = act.response or act.end or None
        etype, message, stack = act.error
        if act.state == "success" and act.executed in (None, "execute_success"):
            self.trk.completed(act.tid, end, attributes=attrs)
        elif act.state == "cancelled" or act.executed == "execute_cancelled":
            self.trk.canceled(act.tid, end, reason="action cancelled")
        else:
            self.trk.failed(
                act.tid, etype or "academy.ActionFailed", end, message=message, stacktrace=stack, attributes=attrs
            )

    def _sweep(self) -> None:
        """Finish actions whose response came but whose agent-side end never did."""
        now = time.time_ns()
        with self.lock:
            for act in [a for a in self.actions.values() if a.response and now - a.response > _GRACE_NS]:
                self._finish(act)

    # -- agent lifetimes -----------------------------------------------------------------------

    def _agent_started(self, aid: str, cls_name: str) -> None:
        if aid in self.agents:
            return
        scope = self.launch_scopes.pop(aid, None)
        ctx = contextvars.Context()
        managers: list[Any] = []

        def enter() -> None:
            adopt = otelflow.adopt_scope(toolkit.ScopeRef.from_dict(scope) if scope else None)
            adopt.__enter__()
            managers.append(adopt)
            blk = otelflow.block(f"agent {cls_name}", block_id=f"agent-{aid}")
            blk.__enter__()
            managers.append(blk)

        ctx.run(enter)
        self.agents[aid] = (ctx, managers)

    def _agent_ended(self, aid: str) -> None:
        entry = self.agents.pop(aid, None)
        if entry is None:
            return
        ctx, managers = entry

        def leave() -> None:
            for cm in reversed(managers):
                with contextlib.suppress(Exception):
                    cm.__exit__(None, None, None)

        ctx.run(leave)

