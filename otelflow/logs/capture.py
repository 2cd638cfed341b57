"""Capture ``logging`` records as wide events: a visitor on the loggers you name.

:class:`LogCapture` is the configuration — which loggers, from which level — as a small
frozen, picklable value; :meth:`LogCapture.apply` adds one :class:`CaptureHandler` to each
named logger and returns an :class:`AppliedCapture` whose ``undo()`` removes exactly what
was added. Nothing else is touched: no ``basicConfig``, no other handler, no level (unless
``set_level=True`` is asked for), so the application's own console/file logging and
pytest's ``caplog`` keep receiving exactly what they did.

A captured record becomes one :class:`~otelflow.events.LogRecord` event: time, level,
logger, template and formatted message, process and thread, every ``extra={...}`` field
(JSON values kept with their JSON type, anything else stringified and marked), the
exception's type, message and traceback, and the current trace, span, task, workflow and
block ids. Inside a task those are the task's; outside any task, the session's.

It cannot loop: a ContextVar guard ignores records logged while a record is being
captured (and on the dispatcher thread), and the ``otelflow``/``opentelemetry`` loggers
are never captured. It never blocks: while the bus is half full, log records are
dropped (lifecycle events keep the other half) and counted in
``summary()["dropped"]["log_records"]``.
"""

from __future__ import annotations

import logging
import math
import threading
import traceback
import weakref
from collections.abc import Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import msgspec
from opentelemetry import trace as otel_trace

from otelflow import _global
from otelflow._task_context import current_task_id
from otelflow.errors import ConfigError
from otelflow.events.model import LogRecord, new_event_id, now_ns
from otelflow.scope import active_scope

if TYPE_CHECKING:
    from otelflow.session import Telemetry

__all__ = ["AppliedCapture", "CaptureHandler", "LogCapture", "capture_for", "capture_logging", "parse_level"]

_in_capture: ContextVar[bool] = ContextVar("otelflow_in_log_capture", default=False)
_SKIP = ("otelflow", "opentelemetry")
_SKIP_DOTTED = ("otelflow.", "opentelemetry.")
_MAX_MESSAGE = 8000
_MAX_VALUE = 4000
_MAX_ATTRIBUTES = 64
_MAX_STACK = 8192
# Every attribute a plain LogRecord has: the rest of record.__dict__ came from extra=.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
           "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}
_encode = msgspec.json.Encoder().encode


def parse_level(level: int | str, what: str = "level") -> int:
    """A ``logging`` level from a number or a name (any case); one clear error otherwise."""
    if isinstance(level, bool):
        raise ConfigError(f"{what}={level!r} is not a log level; use DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    if isinstance(level, int):
        return level
    if isinstance(level, str) and level.strip().upper() in _LEVELS:
        return _LEVELS[level.strip().upper()]
    raise ConfigError(f"{what}={level!r} is not a log level; use DEBUG, INFO, WARNING, ERROR or CRITICAL.")


class LogCapture(msgspec.Struct, frozen=True):
    """Which loggers to capture, from which level: picklable, JSON-encodable.

    Attributes:
        loggers: Logger names; ``""`` is the root logger (everything that propagates).
        level: Lowest level captured (a ``logging`` number).
        set_level: Also lower each named logger's level to ``level`` when its effective
            level is higher (restored by ``undo()``). Off by default: the loggers then
            produce exactly the records they did, and only those reach the capture.
    """

    loggers: tuple[str, ...] = ("",)
    level: int = logging.INFO
    set_level: bool = False

    def apply(self, telemetry: Telemetry | None = None) -> AppliedCapture:
        """Add the capture's handler to each logger; returns the handle to ``undo()`` it.

        Args:
            telemetry: Where records go; None means the process's current telemetry at
                the time of each record (so one capture follows sessions that come and go,
                as in a worker process).
        """
        handler = CaptureHandler(telemetry, self.level)
        changed: list[tuple[logging.Logger, int, int]] = []
        for name in self.loggers:
            logger = logging.getLogger(name or None)
            logger.addHandler(handler)
            if self.set_level and logger.getEffectiveLevel() > self.level:
                changed.append((logger, logger.level, self.level))
                logger.setLevel(self.level)
        applied = AppliedCapture(self, handler, changed)
        with _registry_lock:
            _applied.append(applied)
        return applied

    def merged(self, other: LogCapture) -> LogCapture:
        """Both captures in one: the union of the loggers, the lower level."""
        return LogCapture(
            tuple(dict.fromkeys((*self.loggers, *other.loggers))),
            min(self.level, other.level),
            self.set_level or other.set_level,
        )

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (``LogCapture.from_dict`` reverses it)."""
        return {"loggers": list(self.loggers), "level": self.level, "set_level": self.set_level}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogCapture:
        """Back from :meth:`to_dict` (e.g. after a JSON hop)."""
        return cls(tuple(data.get("loggers", ("",))), int(data.get("level", logging.INFO)),
                   bool(data.get("set_level", False)))


class AppliedCapture:
    """A capture in effect; :meth:`undo` (alias :meth:`stop`) removes exactly what it added."""

    def __init__(self, config: LogCapture, handler: CaptureHandler,
                 changed: list[tuple[logging.Logger, int, int]]) -> None:
        self.config = config
        self.handler = handler
        self._changed = changed
        self._done = False

    @property
    def captured(self) -> int:
        """Records put on a bus so far."""
        return self.handler.captured

    def undo(self) -> None:
        """Remove the handler from every logger it was added to; restore levels it set.

        A level the application changed since is left as the application set it.
        Idempotent.
        """
        if self._done:
            return
        self._done = True
        with _registry_lock:
            if self in _applied:
                _applied.remove(self)
        for name in self.config.loggers:
            logging.getLogger(name or None).removeHandler(self.handler)
        for logger, before, ours in self._changed:
            if logger.level == ours:
                logger.setLevel(before)

    stop = undo

    def __enter__(self) -> AppliedCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.undo()


def capture_logging(*loggers: str, level: int | str = "INFO", set_level: bool = False,
                    telemetry: Telemetry | None = None) -> AppliedCapture:
    """Capture records of the named loggers (none named: the root) into the run.

    ``otelflow.capture_logging("myapp", "parsl", level="INFO")``: each record of those
    loggers at INFO or above becomes a ``log`` line of the current run, with its
    ``extra`` fields and the trace/span/task/workflow/block ids of where it was logged.
    Returns a handle; ``handle.stop()`` — or the telemetry's ``stop()``, whichever comes
    first — removes exactly what was added. Also a context manager. Called while no
    telemetry runs, it captures into whichever telemetry is current at each record, until
    ``handle.stop()``. ``set_level=True`` lowers a logger whose effective level is above ``level``
    (then your other handlers see those records too).

    Raises:
        ConfigError: A logger name that is not a string, or a bad level.
    """
    for name in loggers:
        if not isinstance(name, str):
            raise ConfigError(f"capture_logging() takes logger names as strings, not {name!r}.")
    cfg = LogCapture(tuple(loggers) or ("",), parse_level(level), set_level)
    tel = telemetry if telemetry is not None else _global.current()
    if tel is None or not tel.active:
        return cfg.apply(None)  # follows whichever telemetry is current, until stop()
    applied = cfg.apply(tel)
    tel._captures.append(applied)  # undone by the telemetry's stop() at the latest
    return applied


_registry_lock = threading.Lock()
_applied: list[AppliedCapture] = []


def capture_for(telemetry: Telemetry) -> LogCapture | None:
    """The capture in effect for ``telemetry`` (its own and ``capture_logging()``'s, merged):
    what its worker processes should apply. None when nothing is captured."""
    with _registry_lock:
        configs = [a.config for a in _applied if a.handler._telemetry in (None, telemetry)]
    if not configs:
        return None
    out = configs[0]
    for cfg in configs[1:]:
        out = out.merged(cfg)
    return out


class _LastSeen(threading.local):
    # a weak reference: holding the record would keep its traceback's frames alive
    record: weakref.ref[logging.LogRecord] | None = None
    target: object = None


_last = _LastSeen()


class CaptureHandler(logging.Handler):
    """Puts each record on a telemetry's bus as a ``LogRecord`` event. Never raises.

    Args:
        telemetry: The target, or None for the process's current telemetry per record.
        level: Lowest level handled.
    """

    def __init__(self, telemetry: Telemetry | None, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._telemetry = telemetry
        self.captured = 0
        self.errors = 0

    def createLock(self) -> None:
        # No handler lock: emit() only appends to the bus, which is thread-safe. With a lock,
        # the dispatcher logging a warning while a producer's record waits for room on the
        # bus would deadlock the two.
        self.lock = None

    def emit(self, record: logging.LogRecord) -> None:
        name = record.name
        if _in_capture.get() or name in _SKIP or name.startswith(_SKIP_DOTTED):
            return
        tel = self._telemetry or _global._current
        if tel is None or not tel.active:
            return
        bus = tel.bus
        if bus is None or bus.on_consumer_thread():
            return
        # The same record reaching two captures of one telemetry (root and a named
        # logger) is kept once: handlers run one after the other on the logging thread.
        last = _last.record
        if last is not None and last() is record and _last.target is tel:
            return
        _last.record, _last.target = weakref.ref(record), tel
        token = _in_capture.set(True)
        try:
            if len(bus) >= bus.maxsize // 2:  # half the bus stays for lifecycle events
                tel.count_log_drop()
                return
            ev = to_event(record, tel)
            if bus.offer(ev):  # never waits: a full bus drops and counts
                self.captured += 1
                tel._logs_captured += 1  # a worker flushes after a task that logged
            else:
                tel.count_log_drop()
        except Exception:  # noqa: BLE001 - logging must never break the caller
            self.errors += 1
        finally:
            _in_capture.reset(token)


def to_event(record: logging.LogRecord, tel: Telemetry) -> LogRecord:
    """The ``LogRecord`` event for ``record`` in ``tel``'s run (current ids included)."""
    ctx = otel_trace.get_current_span().get_span_context()
    scope = active_scope()
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - bad %-args: keep the template
        message = str(record.msg)
    attributes, types = _extras(record)
    exc_type = exc_message = stack = None
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        exc_type = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
        exc_message = _short(str(exc), _MAX_VALUE)
        stack = _short("".join(traceback.format_exception(*record.exc_info)), _MAX_STACK)
    elif record.exc_text:
        stack = _short(record.exc_text, _MAX_STACK)
    return LogRecord(
        event_id=new_event_id(),
        event_time=int(record.created * 1e9),
        emit_time=now_ns(),
        session_id=tel.session_id,
        workflow_id=scope.workflow_id if scope is not None else None,
        block_id=scope.block_id if scope is not None else None,
        task_id=current_task_id(),
        level=record.levelname,
        logger=record.name,
        message=_short(message, _MAX_MESSAGE),
        template=_short(str(record.msg), _MAX_MESSAGE),
        trace_id=f"{ctx.trace_id:032x}" if ctx.is_valid else tel.trace_id,
        span_id=f"{ctx.span_id if ctx.is_valid else tel.session_span_id:016x}",
        process=record.process,
        thread=record.threadName,
        code=f"{record.pathname}:{record.lineno}",
        attributes=attributes,
        attribute_types=types,
        exception_type=exc_type,
        exception_message=exc_message,
        stacktrace=stack,
    )


def _extras(record: logging.LogRecord) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    fields = record.__dict__
    extra = fields.keys() - _STANDARD  # set difference in C: most records have no extras
    if not extra:
        return None, None
    attributes: dict[str, Any] = {}
    types: dict[str, str] = {}
    for key in fields:  # in the order they were given
        if key not in extra or key.startswith("_"):
            continue
        if len(attributes) >= _MAX_ATTRIBUTES:
            break
        attributes[key], types[key] = json_value(fields[key])
    return (attributes, types) if attributes else (None, None)


def json_value(value: object) -> tuple[Any, str]:
    """``(value, json_type)`` for one ``extra`` field: JSON values as they are, anything
    else stringified with the type ``"repr:<python type>"``."""
    if value is None:
        return None, "null"
    tp = type(value)
    if tp is bool:
        return value, "boolean"
    if tp is int:
        if -(2**63) <= value < 2**64:  # type: ignore[operator]
            return value, "integer"
    elif tp is float:
        if math.isfinite(value):  # type: ignore[arg-type]
            return value, "number"
    elif tp is str:
        return _short(value, _MAX_VALUE), "string"  # type: ignore[arg-type]
    elif tp in (list, tuple, dict):
        try:
            if len(_encode(value)) <= _MAX_VALUE:
                return value, "object" if tp is dict else "array"
        except (TypeError, msgspec.EncodeError, OverflowError, ValueError):
            pass
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - a broken __str__
        text = f"<unprintable {tp.__qualname__}>"
    return _short(text, _MAX_VALUE), f"repr:{tp.__module__}.{tp.__qualname__}".replace("builtins.", "")


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def install_named(tel: Telemetry, loggers: Iterable[str], level: int) -> AppliedCapture:
    """The session's own capture (``capture_logs`` / ``OTELFLOW_CAPTURE_LOGGERS``)."""
    return LogCapture(tuple(loggers), level).apply(tel)
