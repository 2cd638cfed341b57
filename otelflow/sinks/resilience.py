"""Keeps a slow or dead OTLP collector away from the workflow.

The official OTLP exporters retry a failed export with exponential backoff for up to
their timeout (10 s by default), log a warning or error for every attempt, and the SDK's
batch processor waits for them at shutdown — with the collector down, ``stop()`` would
sit for many seconds and the terminal would fill with near-identical lines. This module
wraps them so that:

* exports run on otelflow's own background threads, never on a producer's or the
  dispatcher's (:class:`GuardedSpanProcessor`, :class:`GuardedMetricReader`);
* a :class:`ExportGuard` — a circuit breaker — remembers that the collector is down
  after one failed export, then fails every export at once (counting what it drops)
  until a probe, every few seconds to a minute, gets through again;
* the exporters' own per-attempt log records are kept out of the user's logs while
  otelflow runs them; :class:`ExportHealth` logs **one** warning per session that names
  the endpoint and the fix (a later recovery or relapse is logged at INFO) — both live in
  :mod:`otelflow.sinks._export_logs`;
* an endpoint that does not take a signal at all — a traces-only backend (Jaeger, Tempo,
  Phoenix) answering metric exports with HTTP 404/405 or gRPC UNIMPLEMENTED — gets one
  warning naming the signal, the endpoint and the fix, and that signal's export stops
  for the run (:attr:`ExportGuard.rejected`) while the others go on;
* at shutdown each exporter gets one bounded flush window — the OTLP timeout, never more
  than what is left of ``stop(timeout)`` — and is aborted at once if the collector is
  already known to be down or nothing accepts TCP connections at its address (checked
  once, so this does not depend on the exporters' log records reaching us), or when the
  window closes;
* everything that could not be exported (including spans refused because the queue was
  full) is counted in ``otelflow_failures``, which the session reports as
  ``summary()["dropped"]["export_failures"]``.

Only the exporters' public ``export()`` / ``shutdown()`` are used: an exporter shut down
mid-export abandons its retry backoff, which is how an export is aborted; a fresh one
from the factory takes over for the next probe.
"""

from __future__ import annotations

import errno
import functools
import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from opentelemetry.context import attach, detach, set_value
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otelflow._otel_compat import SUPPRESS_INSTRUMENTATION_KEY
from otelflow.sinks._export_logs import (
    ExportHealth,
    _current,
    _debug_log,
    _short,
    install_log_filter,
    uninstall_log_filter,
)

_log = logging.getLogger("otelflow")
_monotonic = time.monotonic

#: Seconds the breaker stays open after the first failure; doubled per failed probe.
FIRST_COOLDOWN_S = 5.0
#: Longest wait between two probes of a collector that stays down.
MAX_COOLDOWN_S = 60.0
#: Seconds the shutdown reachability check waits for a TCP connection.
PROBE_TIMEOUT_S = 0.2
#: Grace after the flush window for a worker to notice an abort before it is abandoned.
ABORT_GRACE_S = 0.5
#: What the OTLP exporters log when the endpoint does not serve a signal at all: HTTP
#: 404 Not Found / 405 Method Not Allowed, gRPC UNIMPLEMENTED (no such service).
_NOT_ACCEPTED = re.compile(r"\bcode: (404|405)\b|\bUNIMPLEMENTED\b")


def not_accepted(detail: str) -> str | None:
    """``HTTP 405`` / ``gRPC UNIMPLEMENTED`` if ``detail`` says the endpoint does not take
    the signal, else None."""
    m = _NOT_ACCEPTED.search(detail)
    if m is None:
        return None
    return f"HTTP {m.group(1)}" if m.group(1) else "gRPC UNIMPLEMENTED"


# ---------------------------------------------------------------------------------------
# The circuit breaker
# ---------------------------------------------------------------------------------------


class ExportGuard:
    """Circuit breaker and kill switch around one OTel exporter (one signal).

    :meth:`run` is called by one export thread at a time (the span processor's worker or
    the metric reader's ticker); :meth:`begin_close`, :meth:`abort` and :meth:`shutdown`
    may be called from any thread.

    Args:
        factory: Makes the exporter; called again after an abort, for the next probe.
        signal: ``traces`` or ``metrics`` (for messages).
        endpoint: Where the exporter sends (for messages; never carries secrets here).
        protocol: ``grpc`` or ``http/protobuf`` (for messages).
        flush_s: Longest shutdown flush, in seconds (the OTLP export timeout).
        health: The session's shared :class:`ExportHealth`.
        address: ``(host, port)`` the exporter connects to, for the shutdown reachability
            check; None to skip it.
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        *,
        signal: str,
        endpoint: str,
        protocol: str,
        flush_s: float,
        health: ExportHealth,
        address: tuple[str, int] | None = None,
    ) -> None:
        self._factory = factory
        self.address = address
        self._reachable_at_close: bool | None = None
        self._probed = False
        self._probe_lock = threading.Lock()
        self.signal = signal
        self.endpoint = endpoint
        self.protocol = protocol
        self.flush_s = flush_s
        self._health = health
        self._lock = threading.Lock()
        self._inner: Any = factory()
        self._inner_dead = False
        self.down = False  # the breaker is open: the last export failed
        self.retry_at = 0.0  # while down: time.monotonic() of the next probe
        self._cooldown = FIRST_COOLDOWN_S
        self._exporting = False
        self._trouble = False  # the exporter reported an error during the current export
        self._detail = ""
        self.closing = False
        self.deadline: float | None = None
        self._timer: threading.Timer | None = None
        self.failed_exports = 0
        #: Why the endpoint does not take this signal (``HTTP 405`` …), once it said so:
        #: then nothing more is sent for the run.
        self.rejected: str | None = None
        health.register(self)

    @property
    def exporter(self) -> Any:
        """The current underlying OTel exporter (replaced after an abort)."""
        return self._inner

    # -- export thread ------------------------------------------------------------------

    def run(self, call: Callable[[Any], bool]) -> bool:
        """Run ``call(exporter)`` unless the breaker says not to; True if it succeeded.

        Fails at once (returns False without calling) while the collector is known to be
        down and no probe is due, and when closing after the collector failed or the
        exporter was aborted. Never raises.
        """
        if self.rejected is not None:
            return False  # the endpoint does not take this signal: stopped for the run
        if self.closing and not self.down and self.reachable_at_close() is False:
            # The final flush against a collector that is plainly not there: no attempt,
            # so no retry backoff either (also when the exporters' logs are switched off).
            self._detail = self._detail or f"nothing accepts connections at {self._where()}"
            self._failed()
            return False
        with self._lock:
            if self.closing and (self.down or self._inner_dead):
                return False
            if self.down and time.monotonic() < self.retry_at:
                return False
            if self._inner_dead:
                try:
                    self._inner = self._factory()
                except Exception as exc:  # noqa: BLE001 - never break the export thread
                    _log.debug("otelflow could not recreate the %s exporter: %s", self.signal, exc)
                    return False
                self._inner_dead = False
            inner = self._inner
            self._exporting = True
            self._trouble = False
            self._detail = ""
        _current.guard = self
        token = attach(set_value(SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            ok = bool(call(inner))
        except Exception as exc:  # noqa: BLE001 - an exporter bug must not stop the worker
            ok = False
            self._detail = self._detail or f"{type(exc).__name__}: {exc}"
        finally:
            detach(token)
            _current.guard = None
            self._exporting = False
        if ok:
            self._succeeded()
        else:
            self._failed()
        return ok

    def exporter_reported(self, record: logging.LogRecord) -> None:
        """An exporter logged a warning or error inside :meth:`run` (called by the filter).

        The exporter is about to back off and retry. When the collector is already known
        to be down (this is a probe) or the session is stopping, waiting is pointless:
        the export is aborted at once.
        """
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record
            message = str(record.msg)
        _debug_log.debug("OTel %s exporter: %s", self.signal, message)
        if not self._detail:
            self._detail = _short(message)
        self._trouble = True
        if self.down or self.closing:
            self.abort()

    def _succeeded(self) -> None:
        was_down = self.down
        with self._lock:
            self.down = False
            self._cooldown = FIRST_COOLDOWN_S
        if was_down:
            self._health.up(self)

    def _failed(self) -> None:
        self.failed_exports += 1
        reason = not_accepted(self._detail) if self._detail else None
        if reason is not None and self.rejected is None:
            self.rejected = reason
            self._health.rejected(self, reason)
            return
        with self._lock:
            was_down = self.down
            self.down = True
            if was_down:
                self._cooldown = min(self._cooldown * 2, MAX_COOLDOWN_S)
            self.retry_at = time.monotonic() + self._cooldown
            detail = self._detail or "the export failed"
        if not was_down:
            self._health.down(self, detail, (FIRST_COOLDOWN_S, MAX_COOLDOWN_S))

    # -- any thread -----------------------------------------------------------------------

    def begin_close(self, deadline: float | None = None) -> float:
        """Start the shutdown flush window; return its deadline (``time.monotonic()``).

        The window ends at ``deadline`` or after :attr:`flush_s`, whichever is first; an
        earlier call's window is kept. If the collector is known to be down, or the
        export in progress has already hit an error, or nothing accepts connections at
        the collector's address (:meth:`reachable_at_close`), the exporter is aborted now;
        otherwise it is aborted when the window ends.
        """
        now = time.monotonic()
        with self._lock:
            first = self.deadline is None
            if first:
                own = now + self.flush_s
                self.deadline = own if deadline is None else min(own, deadline)
                self.closing = True
                self._window_s = max(0.0, self.deadline - now)
            window_end = self.deadline
            assert window_end is not None
            give_up_now = first and (self.down or self.rejected is not None or (self._exporting and self._trouble))
            check = first and self._exporting and not give_up_now
        if check and self.reachable_at_close() is False:
            # An export is in progress, most likely in the exporter's retry backoff since
            # nothing listens there (this does not depend on the exporter's log records).
            self._detail = self._detail or f"nothing accepts connections at {self._where()}"
            give_up_now = True
        if first and not give_up_now:
            timer = threading.Timer(max(0.0, window_end - now), self._window_closed)
            timer.name = f"otelflow-otlp-{self.signal}-deadline"
            timer.daemon = True
            self._timer = timer
            timer.start()
        if give_up_now:
            self.abort()
        return window_end

    def reachable_at_close(self) -> bool | None:
        """Whether the collector accepts TCP connections, checked once at shutdown.

        False when the connection is refused, the host is unreachable or its name does
        not resolve; True when it connects; None when unknown (no address, or no answer
        within :data:`PROBE_TIMEOUT_S`). Only used while closing: during the run the
        exporters' own results decide.
        """
        with self._probe_lock:  # one check, whichever thread asks first; others wait for it
            if not self._probed:
                self._reachable_at_close = _tcp_reachable(self.address)
                self._probed = True
        return self._reachable_at_close

    def _where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}" if self.address else self.endpoint

    def _window_closed(self) -> None:
        if self._exporting:
            if not self._detail:
                window = getattr(self, "_window_s", self.flush_s)
                self._detail = f"no answer within the {window:.3g} s shutdown flush window"
            # Report it now, before stop() returns: an HTTP export blocked reading a
            # socket is not interrupted by abort(), and would report only after (or never).
            self._failed()
        self.abort()

    def abort(self) -> None:
        """Shut the exporter down now: a retry backoff in progress ends at once.

        An export running meanwhile returns failure; later ones fail at once while
        closing, or go to a fresh exporter (the next probe) otherwise.
        """
        with self._lock:
            if self._inner_dead:
                return
            self._inner_dead = True
            inner = self._inner
        _shutdown_quietly(self, inner)

    def shutdown(self) -> None:
        """Final shutdown: stop the timer and the exporter (quietly; idempotent)."""
        timer = self._timer
        if timer is not None:
            timer.cancel()
        self.abort()


def _tcp_reachable(address: tuple[str, int] | None) -> bool | None:
    if address is None:
        return None
    try:
        socket.create_connection(address, timeout=PROBE_TIMEOUT_S).close()
    except (ConnectionRefusedError, socket.gaierror):
        return False
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
            return False
        return None  # a timeout or anything else: cannot tell
    return True


def _shutdown_quietly(guard: ExportGuard, exporter: Any) -> None:
    previous = _current.guard
    _current.guard = guard
    try:
        exporter.shutdown()
    except Exception as exc:  # noqa: BLE001 - shutting down a broken exporter
        _debug_log.debug("OTel %s exporter shutdown: %s", guard.signal, exc)
    finally:
        _current.guard = previous


# ---------------------------------------------------------------------------------------
# Spans
# ---------------------------------------------------------------------------------------


class GuardedSpanProcessor(SpanProcessor):
    """A batching span processor that never blocks its caller and counts every loss.

    ``on_end`` (any thread; for otelflow's tree spans, the dispatcher) only appends to a
    bounded deque. One named daemon thread exports batches of up to ``batch_size`` spans
    every ``delay_s`` seconds, or as soon as a batch is full, through an
    :class:`ExportGuard`. At ``shutdown()`` the rest is exported within the guard's flush
    window; what is left then is counted, not waited for.

    Args:
        guard: The exporter and its circuit breaker.
        max_queue: Most spans waiting; beyond it new spans are dropped and counted.
        batch_size: Most spans per export call.
        delay_s: Longest wait before a partial batch is exported.
    """

    def __init__(
        self, guard: ExportGuard, *, max_queue: int = 16384, batch_size: int = 512, delay_s: float = 1.0
    ) -> None:
        self.guard = guard
        self._queue: deque[ReadableSpan] = deque()
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._delay_s = delay_s
        self._wake = threading.Event()
        self._closing = False
        self._abandoned = False
        self._inflight = 0
        self.exported = 0
        self.failed = 0  # counted by the worker (and shutdown)
        self.refused = 0  # counted by on_end's thread, as dropped: no shared counter
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=f"otelflow-otlp-{guard.signal}", daemon=True)
        self._thread.start()

    @property
    def otelflow_failures(self) -> int:
        """Spans not exported: failed, refused while the collector is down, or dropped
        because the queue was full (or they ended after shutdown)."""
        return self.failed + self.refused + self.dropped

    @property
    def otelflow_refusing(self) -> bool:
        """True while the collector is known to be down and :meth:`on_end` refuses spans.

        Read by otelflow's trace tree (dispatcher thread) before it builds a span: while
        this is True it calls :meth:`otelflow_refuse` instead of building the span for
        :meth:`on_end`. O(1), never blocks.
        """
        guard = self.guard
        return (guard.down and _monotonic() < guard.retry_at) or guard.rejected is not None

    def otelflow_refuse(self) -> None:
        """Count one span refused without being built, as :meth:`on_end` would have."""
        self.refused += 1

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue ``span`` for export. O(1), never blocks, never raises."""
        guard = self.guard
        if (guard.down and _monotonic() < guard.retry_at) or guard.rejected is not None:
            self.refused += 1  # collector down, or it does not take spans: no queueing
            return
        queue = self._queue
        if self._closing or len(queue) >= self._max_queue:
            self.dropped += 1
            return
        queue.append(span)
        if len(queue) >= self._batch_size and not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            closing = self._closing
            self._drain()
            if closing or self._abandoned:
                return

    def _drain(self) -> None:
        queue = self._queue
        while queue and not self._abandoned:
            n = min(self._batch_size, len(queue))
            batch = [queue.popleft() for _ in range(n)]
            self._inflight = n
            ok = self.guard.run(functools.partial(_export_batch, batch))
            self._inflight = 0
            if self._abandoned:  # counted by shutdown() already
                return
            if ok:
                self.exported += n
            else:
                self.failed += n

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export what is queued now; True if it was handed to the exporter in time."""
        if self._closing:
            return False
        deadline = time.monotonic() + timeout_millis / 1000
        self._wake.set()
        while self._queue or self._inflight:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
            self._wake.set()
        return True

    def shutdown(self) -> None:
        """Flush within the guard's window, then stop; counts whatever is left."""
        if self._closing:
            return
        self._closing = True
        deadline = self.guard.begin_close()
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()) + ABORT_GRACE_S)
        if self._thread.is_alive():
            self.guard.abort()
            self._thread.join(ABORT_GRACE_S)
        if self._thread.is_alive():  # stuck in an export that ignores shutdown
            self._abandoned = True
            self.failed += len(self._queue) + self._inflight
            self._queue.clear()
        self.guard.shutdown()


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------


class GuardedMetricExporter(MetricExporter):
    """A metric exporter that runs the real one through an :class:`ExportGuard`.

    Counts the data points it could not deliver in :attr:`failed_points`.
    """

    def __init__(self, guard: ExportGuard) -> None:
        inner = guard.exporter
        super().__init__(
            preferred_temporality=getattr(inner, "_preferred_temporality", None),
            preferred_aggregation=getattr(inner, "_preferred_aggregation", None),
        )
        self.guard = guard
        self.failed_points = 0
        self.exported_points = 0

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        """Export through the guard; never raises."""
        points = count_points(metrics_data)
        ok = self.guard.run(
            lambda exporter: exporter.export(metrics_data, timeout_millis=timeout_millis) == MetricExportResult.SUCCESS
        )
        if ok:
            self.exported_points += points
            return MetricExportResult.SUCCESS
        self.failed_points += points
        return MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Nothing is buffered here."""
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Shut the real exporter down (quietly; idempotent)."""
        self.guard.shutdown()


class GuardedMetricReader(PeriodicExportingMetricReader):
    """``PeriodicExportingMetricReader`` whose shutdown flush is bounded by its guard.

    Args:
        exporter: The guarded exporter.
        export_interval_millis: Milliseconds between exports.
        export_timeout_millis: Milliseconds one collect-and-export may take.
    """

    def __init__(
        self, exporter: GuardedMetricExporter, export_interval_millis: float, export_timeout_millis: float
    ) -> None:
        super().__init__(
            exporter,
            export_interval_millis=export_interval_millis,
            export_timeout_millis=export_timeout_millis,
        )
        self.guarded = exporter

    @property
    def otelflow_failures(self) -> int:
        """Metric data points that could not be exported."""
        return self.guarded.failed_points

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Final collect and export within the guard's flush window, then stop."""
        deadline = self.guarded.guard.begin_close()
        window_ms = (max(0.0, deadline - time.monotonic()) + ABORT_GRACE_S) * 1000
        super().shutdown(timeout_millis=min(timeout_millis, window_ms), **kwargs)
        self.guarded.guard.shutdown()


def count_points(data: MetricsData | None) -> int:
    """Number of data points in ``data``."""
    if data is None:
        return 0
    n = 0
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                n += len(getattr(metric.data, "data_points", ()) or ())
    return n


__all__ = [
    "ExportGuard",
    "ExportHealth",
    "GuardedMetricExporter",
    "GuardedMetricReader",
    "GuardedSpanProcessor",
    "count_points",
    "install_log_filter",
    "not_accepted",
    "uninstall_log_filter",
]


def _export_batch(batch: list[ReadableSpan], exporter: SpanExporter) -> bool:
    return bool(exporter.export(batch) == SpanExportResult.SUCCESS)
