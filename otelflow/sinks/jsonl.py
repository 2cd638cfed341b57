"""The JSONL run-directory sink: one file per process, written by the dispatcher only.

Lines are appended to an in-memory ``bytearray`` with msgspec's ``encode_into`` (no
per-line ``bytes`` objects) and written with ``os.write`` at most ``flush_interval``
seconds later, or as soon as 64 KiB are waiting. A killed process therefore loses at
most that window, and ``tail -f`` works. Write errors (a full disk, a removed directory)
are logged once and counted; the workflow goes on.

Every line is one JSON object with a ``section`` (event | span | metric | log) and, for
events and spans, the W3C ``trace_id`` (32 hex) and ``span_id`` (16 hex).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import StatusCode

from otelflow._warn import warn_visibly
from otelflow.events.model import Event, now_ns
from otelflow.validate import json_safe

_log = logging.getLogger("otelflow")
_COMMA = ord(",")
# Larger buffers make msgspec's encode_into slower (measured: 0.37 µs/line at 32 KiB,
# 0.63 µs at 256 KiB); 64 KiB keeps encoding fast with few write() calls.
_FLUSH_BYTES = 64 * 1024


def _sanitize(obj: Any) -> Any:
    """msgspec ``enc_hook``: turn anything unserializable into its ``repr``."""
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    try:
        return repr(obj)
    except Exception:  # noqa: BLE001 - a broken __repr__
        return f"<unrepresentable {type(obj).__qualname__}>"


class JsonlWriter:
    """Buffered, single-writer JSONL file. Call only from the dispatcher thread.

    Args:
        path: The file to append to; None with ``sink``.
        flush_interval: Longest time a line waits in the buffer.
        sink: Instead of a file, hand each flushed batch of lines (bytes, newline-terminated)
            to this callable — how a worker with no shared disk sends its lines home
            (:func:`otelflow.toolkit.join_run` with ``forward=``). It must not block for long.
        compression: ``"zstd"`` writes each flush as one complete zstd frame (needs the
            ``zstandard`` package: :func:`zstd_compressor`), so the file is a valid zstd
            stream after every flush and a killed process loses at most its last frame.
            Forwarded lines (``sink``) are never compressed.
    """

    def __init__(
        self,
        path: Path | str | None,
        flush_interval: float = 0.25,
        sink: Callable[[bytes], object] | None = None,
        compression: str = "none",
    ) -> None:
        self.path = Path(path) if path is not None else Path("<forwarded>")
        self.flush_interval = flush_interval
        self._sink = sink
        self._zstd = zstd_compressor() if compression == "zstd" and sink is None else None
        self._buf = bytearray()
        self._lines = 0
        self._encoder = msgspec.json.Encoder()
        self._safe_encoder = msgspec.json.Encoder(enc_hook=_sanitize)
        self._last_flush = time.monotonic()
        self.lines_written = 0
        self.lines_lost = 0
        self.sanitized = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self._closed = False
        self._fd: int | None = None
        if sink is not None:
            return
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            self._fail(exc)

    # -- writing (dispatcher thread) ---------------------------------------------------------

    def write_event(self, ev: Event, header: bytes) -> None:
        """Append one event line: ``header`` is ``{"section":…,"span_id":"…"`` (no brace end)."""
        buf = self._buf
        start = len(buf)
        buf += header
        pos = len(buf)
        try:
            self._encoder.encode_into(ev, buf, -1)
        except Exception:  # noqa: BLE001 - also RecursionError, UnicodeEncodeError
            del buf[pos:]
            if not self._encode_sanitized(ev, buf):
                del buf[start:]  # never leave a partial line to swallow the next one
                return
        if len(buf) > pos + 2:
            buf[pos] = _COMMA  # '{' of the event object → ',' joins it to the header
        else:  # an empty object: close the header instead
            del buf[pos:]
            buf += b"}"
        buf += b"\n"
        self._lines += 1
        if len(buf) >= _FLUSH_BYTES:
            self.flush()

    def write_struct(self, obj: Any) -> None:
        """Append one line holding ``obj`` encoded as JSON (a struct or a dict)."""
        buf = self._buf
        pos = len(buf)
        try:
            self._encoder.encode_into(obj, buf, -1)
        except Exception:  # noqa: BLE001 - also RecursionError, UnicodeEncodeError
            del buf[pos:]
            if not self._encode_sanitized(obj, buf):
                return
        buf += b"\n"
        self._lines += 1
        if len(buf) >= _FLUSH_BYTES:
            self.flush()

    def _encode_sanitized(self, obj: Any, buf: bytearray) -> bool:
        """Append ``obj`` with unserializable values as their repr, or as plain JSON data
        (surrogates replaced, deep nesting cut); False (the line is lost, and counted)
        if even that fails. Leaves ``buf`` as it found it on failure."""
        pos = len(buf)
        self._note_sanitized(obj)
        try:
            self._safe_encoder.encode_into(obj, buf, -1)
            return True
        except Exception:  # noqa: BLE001
            del buf[pos:]
        try:
            self._encoder.encode_into(json_safe(obj), buf, -1)
            return True
        except Exception:  # noqa: BLE001
            del buf[pos:]
            self.lines_lost += 1
            return False

    def _note_sanitized(self, obj: Any) -> None:
        self.sanitized += 1
        if self.sanitized == 1:
            _log.warning(
                "otelflow: a %s had a value JSON cannot hold; it was written as its repr(). "
                "Use str, int, float, bool, lists and dicts of those as attribute values.",
                type(obj).__name__,
            )

    def tick(self, now: float) -> None:
        """Flush if the oldest buffered line is ``flush_interval`` old (dispatcher loop)."""
        if self._buf and now - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Write the buffer to the file now."""
        self._last_flush = time.monotonic()
        buf = self._buf
        if not buf:
            return
        lines = self._lines
        self._lines = 0
        # A fresh buffer instead of clear(): no memoryview is taken of the old one, so
        # nothing another thread holds (gc.get_objects(), a profiler) can make resizing it
        # fail with BufferError.
        self._buf = bytearray()
        if self._sink is not None:
            if self._closed:
                self.lines_lost += lines
                return
            try:
                self._sink(bytes(buf))
                self.lines_written += lines
            except Exception as exc:  # noqa: BLE001 - the engine's connection is gone
                self.lines_lost += lines
                self._fail(OSError(f"forwarding failed: {exc}"))
            return
        if self._fd is None:
            self.lines_lost += lines
            return
        data: bytes | bytearray = buf if self._zstd is None else self._zstd.compress(buf)
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # a partial write (rare): write the rest
                written += os.write(self._fd, data[written:])
            self.lines_written += lines
        except OSError as exc:
            self.lines_lost += lines
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.write_errors += 1
        self.last_error = str(exc)
        if self.write_errors == 1:
            warn_visibly(
                _log,
                "otelflow could not write the run file %s: %s. Telemetry lines are being "
                "dropped and counted; free disk space or point OTELFLOW_RUNS_DIR "
                "(checkpoint_path=) at a writable directory. The workflow goes on.",
                self.path,
                exc,
            )

    def close(self) -> None:
        """Flush and close the file. Further writes are counted as lost."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self._fd is not None:
            # No fsync: data in the page cache survives a killed process, which is the
            # failure that matters here; fsync would add ~0.2 s per GB to every stop().
            os.close(self._fd)
            self._fd = None


# --- bus items handed to the dispatcher by other threads --------------------------------------


class SpanItem:
    """A span finished by user code (via our TracerProvider), to be written as a line."""

    __slots__ = ("span",)

    def __init__(self, span: ReadableSpan) -> None:
        self.span = span


class MetricsItem:
    """A metrics snapshot from the periodic reader, to be written as lines."""

    __slots__ = ("data",)

    def __init__(self, data: MetricsData) -> None:
        self.data = data


class JsonlSpanProcessor(SpanProcessor):
    """Span processor that sends spans made by user code to the run directory via the bus."""

    def __init__(self, put: Any) -> None:
        self._put = put

    def on_end(self, span: ReadableSpan) -> None:
        self._put(SpanItem(span))

    def shutdown(self) -> None:  # the session closes the writer itself
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class JsonlMetricExporter(MetricExporter):
    """Metric exporter that sends periodic snapshots to the run directory via the bus."""

    def __init__(self, put: Any) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self._put = put

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self._put(MetricsItem(metrics_data))
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def user_span_line(span: ReadableSpan) -> dict[str, Any]:
    """Encode a span made by user code as a ``section: span`` line (dispatcher thread)."""
    ctx = span.context
    parent = span.parent
    status = span.status.status_code
    return {
        "section": "span",
        "trace_id": f"{ctx.trace_id:032x}" if ctx else None,
        "span_id": f"{ctx.span_id:016x}" if ctx else None,
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "name": span.name,
        "kind": "user",
        "start_time": span.start_time,
        "end_time": span.end_time,
        "status": "failed" if status == StatusCode.ERROR else "completed",
        "attributes": dict(span.attributes or {}),
        "events": [(e.name, e.timestamp) for e in span.events],
        "links": [f"{link.context.span_id:016x}" for link in span.links],
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
    }


def metric_lines(data: MetricsData) -> list[dict[str, Any]]:
    """Encode a metrics snapshot as ``section: metric`` lines, one per metric."""
    out: list[dict[str, Any]] = []
    t = now_ns()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points: list[dict[str, Any]] = []
                kind = type(metric.data).__name__.lower()
                for p in metric.data.data_points:
                    point: dict[str, Any] = {"attributes": dict(p.attributes or {})}
                    if isinstance(p, HistogramDataPoint):
                        point.update(
                            count=p.count,
                            sum=p.sum,
                            min=p.min,
                            max=p.max,
                            bucket_counts=list(p.bucket_counts),
                            explicit_bounds=list(p.explicit_bounds),
                        )
                    elif isinstance(p, NumberDataPoint):
                        point["value"] = p.value
                    else:  # an exponential histogram: no explicit buckets to write
                        point.update(count=p.count, sum=p.sum, min=p.min, max=p.max)
                    points.append(point)
                temporality = getattr(metric.data, "aggregation_temporality", None)
                out.append(
                    {
                        "section": "metric",
                        "time": t,
                        "scope": sm.scope.name,
                        "name": metric.name,
                        "unit": metric.unit,
                        "kind": kind,
                        "temporality": (
                            "delta" if temporality == AggregationTemporality.DELTA else "cumulative"
                        )
                        if temporality is not None
                        else None,
                        "points": points,
                    }
                )
    return out


def run_file_name(role: str, host: str, pid: int, compression: str = "none") -> str:
    """Name of this process's JSONL file inside the run directory (``.jsonl.zst`` for zstd)."""
    safe_host = "".join(c if c.isalnum() or c in "-_." else "_" for c in host) or "host"
    return f"{role}-{safe_host}-{pid}.jsonl" + (".zst" if compression == "zstd" else "")


def zstd_compressor() -> Any:
    """A zstd compressor for the JSONL writer (level 3: ~10× smaller at ~300 MB/s).

    Raises:
        ConfigError: ``zstandard`` is not installed (the message says how to install it).
    """
    try:
        import zstandard
    except ImportError as exc:
        from otelflow.errors import ConfigError

        raise ConfigError(
            "OTELFLOW_JSONL_COMPRESSION=zstd needs the zstandard package, which is not installed: "
            "pip install 'otelflow[zstd]' (or unset OTELFLOW_JSONL_COMPRESSION)."
        ) from exc
    return zstandard.ZstdCompressor(level=3)


__all__: Sequence[str] = (
    "JsonlMetricExporter",
    "JsonlSpanProcessor",
    "JsonlWriter",
    "MetricsItem",
    "SpanItem",
    "metric_lines",
    "run_file_name",
    "user_span_line",
    "zstd_compressor",
)
