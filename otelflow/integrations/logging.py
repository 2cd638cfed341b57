"""Bridge Python ``logging`` records into the run as ``LogRecord`` events.

Enabled by ``start_telemetry(capture_logs=True)`` or ``OTELFLOW_CAPTURE_LOGS=1``: the
session adds one handler to the root logger (it never replaces handlers or levels) and
removes it at ``stop()``. Each record carries the current trace/span ids — inside a task,
the task span's — and the workflow/block ids, so logs group with the work that wrote them.

A ContextVar guard keeps the bridge from looping when otelflow's own pipeline logs, and
records from the ``otelflow`` and ``opentelemetry`` loggers are never captured.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING

from opentelemetry import trace as otel_trace

from otelflow.events.model import LogRecord, new_event_id, now_ns
from otelflow.scope import active_scope

if TYPE_CHECKING:
    from otelflow.session import Telemetry

__all__ = ["LogBridgeHandler"]

_in_bridge: ContextVar[bool] = ContextVar("otelflow_in_log_bridge", default=False)
_MAX_MESSAGE = 8000
_SKIP_PREFIXES = ("otelflow", "opentelemetry")


class LogBridgeHandler(logging.Handler):
    """A ``logging.Handler`` that puts records on a telemetry's bus (never raises)."""

    def __init__(self, telemetry: Telemetry, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._telemetry = telemetry
        self.errors = 0

    def createLock(self) -> None:
        # No handler lock: emit() only appends to the bus, which is thread-safe. With a lock,
        # the dispatcher logging a warning while a producer's record waits for room on the
        # bus would deadlock the two.
        self.lock = None

    def emit(self, record: logging.LogRecord) -> None:
        name = record.name
        if _in_bridge.get() or any(name == p or name.startswith(p + ".") for p in _SKIP_PREFIXES):
            return
        tel = self._telemetry
        bus = tel.bus
        if not tel.active or bus is None or bus.on_consumer_thread():
            return
        token = _in_bridge.set(True)
        try:
            ctx = otel_trace.get_current_span().get_span_context()
            scope = active_scope()
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - bad %-args: keep the template
                message = str(record.msg)
            if record.exc_info and record.exc_info[1] is not None:
                message += f" [{type(record.exc_info[1]).__name__}: {record.exc_info[1]}]"
            bus.offer(  # never waits: a full bus drops (and counts) a log record
                LogRecord(
                    event_id=new_event_id(),
                    event_time=int(record.created * 1e9),
                    emit_time=now_ns(),
                    session_id=tel.session_id,
                    workflow_id=scope.workflow_id if scope is not None else None,
                    block_id=scope.block_id if scope is not None else None,
                    level=record.levelname,
                    logger=record.name,
                    message=message[:_MAX_MESSAGE],
                    trace_id=f"{ctx.trace_id:032x}" if ctx.is_valid else tel.trace_id,
                    span_id=f"{ctx.span_id if ctx.is_valid else tel.session_span_id:016x}",
                )
            )
        except Exception:  # noqa: BLE001 - logging must never break the caller
            self.errors += 1
        finally:
            _in_bridge.reset(token)


def install(telemetry: Telemetry, level: int) -> LogBridgeHandler:
    """Add a bridge handler for ``telemetry`` to the root logger."""
    handler = LogBridgeHandler(telemetry, level)
    logging.getLogger().addHandler(handler)
    return handler


def uninstall(handler: LogBridgeHandler) -> None:
    """Remove the handler added by :func:`install`."""
    logging.getLogger().removeHandler(handler)
