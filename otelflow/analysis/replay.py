"""Replay a recorded run's spans to an OTLP endpoint (Jaeger, Tempo, a Collector …).

A run recorded offline (JSONL only) can be looked at in a trace viewer later: every span
line becomes an :class:`opentelemetry.sdk.trace.ReadableSpan` with the **original** trace
id, span id, parent, start and end times, links, status, attributes and span events, and
is sent with the official OTLP exporter (gRPC or HTTP/protobuf). The resource is the one
the live exporters sent, recorded in ``run.json`` — not the replaying machine's.

Replaying the same run twice sends the same ids twice; most backends keep both copies.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from otelflow.analysis.reader import Run
from otelflow.errors import ConfigError, OtelflowError

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "EXPORTER_LOGGER",
    "PROTOCOLS",
    "ReplayError",
    "ReplayResult",
    "make_exporter",
    "readable_spans",
    "replay",
    "run_resource",
]

PROTOCOLS = ("grpc", "http/protobuf")
"""The OTLP protocols :func:`replay` speaks."""

_MAX_INT = 2**63 - 1


class ReplayError(OtelflowError):
    """The spans could not be sent to the OTLP endpoint."""


@dataclass(frozen=True)
class ReplayResult:
    """What :func:`replay` sent.

    Attributes:
        spans: Spans exported.
        skipped: Span lines that lacked valid ids or times and were not sent.
        batches: Export calls made.
        protocol: The protocol used.
        endpoint: The endpoint given (None: taken from the OTel environment variables).
    """

    spans: int
    skipped: int
    batches: int
    protocol: str
    endpoint: str | None


EXPORTER_LOGGER = "opentelemetry.exporter"
"""Parent logger of the OTLP exporters; :func:`replay` reads its warnings to explain failures."""


class _ExporterLog(logging.Handler):
    """Keeps the last few messages the OTLP exporters log, to say why an export failed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # noqa: BLE001 - a malformed record: nothing to learn from it
            return
        del self.messages[:-5]

    def reason(self) -> str | None:
        """A short cause (``connection refused``, ``HTTP 401 Unauthorized`` …), if one was logged."""
        msgs = self.messages[::-1]
        for msg in msgs:
            m = re.search(r"batch code: (\d+), reason: ([^,\n]*)", msg)
            if m:
                return f"HTTP {m.group(1)} {m.group(2)}".strip()
            m = re.search(r"StatusCode\.([A-Z_]+)", msg)
            if m:
                return f"gRPC {m.group(1)}"
        for needle, reason in (
            ("onnection refused", "connection refused"),
            ("Name or service not known", "unknown host"),
            ("nodename nor servname", "unknown host"),
            ("Temporary failure in name resolution", "unknown host"),
            ("timed out", "timed out"),
            ("due to timeout, max retries", "no success before the timeout"),
        ):
            if any(needle in msg for msg in msgs):
                return reason
        return None


def run_resource(run: Run) -> Resource:
    """The OTel resource of a recorded run.

    The resource the live exporters used, from ``run.json["resource"]``, exactly (same
    attributes, none added). A run recorded before otelflow wrote it gets its service
    name, run, session, host and pid.
    """
    from opentelemetry.sdk.resources import Resource

    meta = run.meta
    recorded = meta.get("resource")
    if isinstance(recorded, Mapping) and recorded:
        values = {str(k): _attr_value(v) for k, v in recorded.items()}
        return Resource({k: v for k, v in values.items() if v is not None})
    attrs: dict[str, Any] = {"service.name": run.service_name}
    for key, value in (
        ("otelflow.run.id", run.run_id),
        ("otelflow.session.id", meta.get("session_id")),
        ("host.name", meta.get("host")),
        ("process.pid", meta.get("pid")),
    ):
        if value is not None and key not in attrs:
            attrs[key] = value
    return Resource(attrs)


def _attr_value(v: Any) -> Any:
    """A JSON value as an OTel attribute value (None: leave the attribute out)."""
    if v is None:
        return None
    if isinstance(v, (bool, str, float)):
        return v
    if isinstance(v, int):
        return v if -_MAX_INT - 1 <= v <= _MAX_INT else str(v)
    if isinstance(v, (list, tuple)):
        if not v:
            return ()
        kinds = {type(x) for x in v}
        if len(kinds) == 1 and kinds <= {str, bool, int, float}:
            return tuple(v)
        if kinds <= {int, float}:
            return tuple(float(x) for x in v)
    return json.dumps(v, sort_keys=True, default=str)


def _hex(v: Any, width: int) -> int | None:
    if not isinstance(v, str) or len(v) != width:
        return None
    try:
        n = int(v, 16)
    except ValueError:
        return None
    return n or None


class _SpanFactory:
    def __init__(self, run: Run) -> None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import TraceFlags

        self.resource = run_resource(run)
        self.trace_id = _hex(run.trace_id, 32)
        versions = run.meta.get("versions")
        version = versions.get("otelflow") if isinstance(versions, Mapping) else None
        self.scope = InstrumentationScope("otelflow", str(version) if version else None)
        self.user_scopes: dict[str, Any] = {}
        self.flags = TraceFlags(TraceFlags.SAMPLED)
        self._scope_cls = InstrumentationScope

    def make(self, line: dict[str, Any]) -> ReadableSpan | None:
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

        trace_id = _hex(line.get("trace_id"), 32) or self.trace_id
        span_id = _hex(line.get("span_id"), 16)
        start, end = line.get("start_time"), line.get("end_time")
        if trace_id is None or span_id is None or not isinstance(start, int):
            return None
        if not isinstance(end, int) or end < start:
            end = start
        flags = self.flags
        parent_id = _hex(line.get("parent_span_id"), 16)
        parent = SpanContext(trace_id, parent_id, False, flags) if parent_id else None
        raw_attrs = line.get("attributes")
        attrs: dict[str, Any] = {}
        if isinstance(raw_attrs, Mapping):
            for k, v in raw_attrs.items():
                value = _attr_value(v)
                if value is not None:
                    attrs[str(k)] = value
        events = []
        for item in line.get("events") or ():
            if isinstance(item, (list, tuple)) and len(item) >= 2 and isinstance(item[1], int):
                events.append(Event(str(item[0]), attributes=None, timestamp=item[1]))
        links = []
        for link in line.get("links") or ():
            # "<span id>" in this span's trace, or "<trace id>:<span id>" in another one
            link_trace, _, link_span = str(link).rpartition(":")
            ltid = _hex(link_trace, 32) if link_trace else trace_id
            lid = _hex(link_span, 16)
            if lid and ltid:
                links.append(Link(SpanContext(ltid, lid, False, flags)))
        status_name = line.get("status")
        error_message = line.get("error_message")
        if status_name == "failed":
            error_type = attrs.get("error.type")
            if error_message and error_type:
                description = f"{error_type}: {error_message}"
            else:
                description = str(error_message or error_type or "failed")
            status = Status(StatusCode.ERROR, description)
            if line.get("kind") == "task":
                ex_attrs = {"exception.type": str(error_type or "Exception")}
                if error_message:
                    ex_attrs["exception.message"] = str(error_message)
                stack = line.get("error_stacktrace")
                if isinstance(stack, str) and stack:
                    ex_attrs["exception.stacktrace"] = stack
                events.append(Event("exception", attributes=ex_attrs, timestamp=end))
        elif error_message and line.get("kind") in ("session", "workflow", "block"):
            status = Status(StatusCode.ERROR, str(error_message))  # "2 of 54 tasks failed"
        else:
            status = Status(StatusCode.UNSET)
        scope = self.scope
        user_scope = line.get("scope")
        if line.get("kind") == "user" and isinstance(user_scope, str) and user_scope:
            known = self.user_scopes.get(user_scope)
            if known is None:
                known = self.user_scopes[user_scope] = self._scope_cls(user_scope)
            scope = known
        return ReadableSpan(
            name=str(line.get("name") or "span"),
            context=SpanContext(trace_id, span_id, False, flags),
            parent=parent,
            resource=self.resource,
            attributes=attrs,
            events=events,
            links=links,
            kind=SpanKind.INTERNAL,
            status=status,
            start_time=start,
            end_time=end,
            instrumentation_scope=scope,
        )


def readable_spans(run: Run, *, skipped: list[int] | None = None) -> Iterator[ReadableSpan]:
    """Turn the run's span lines into OTel ``ReadableSpan`` objects, streaming.

    Args:
        run: The run.
        skipped: If given, its first element is increased for each span line without valid
            ids or start time (such lines are not yielded).

    Yields:
        One span per valid span line, in file order.
    """
    factory = _SpanFactory(run)
    for line in run.spans(ordered=False):
        span = factory.make(line)
        if span is None:
            if skipped is not None:
                skipped[0] += 1
            continue
        yield span


def _protocol(protocol: str | None) -> str:
    p = (
        (
            protocol
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        )
        .strip()
        .lower()
    )
    if p == "http":
        p = "http/protobuf"
    if p not in PROTOCOLS:
        raise ConfigError(
            f"Unknown OTLP protocol {p!r}: use 'grpc' or 'http/protobuf' (the argument, "
            f"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL)."
        )
    return p


def make_exporter(
    endpoint: str | None = None,
    protocol: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> SpanExporter:
    """Create the official OTLP span exporter for ``protocol``.

    Args:
        endpoint: ``http(s)://host:port`` (for HTTP, ``/v1/traces`` is added when the URL
            has no path; for gRPC, a bare ``host:port`` means plain-text ``http://``). None
            uses the OTel environment variables and defaults.
        protocol: ``"grpc"`` or ``"http/protobuf"``; None uses
            ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``, else
            ``http/protobuf``.
        headers: Extra request headers (e.g. an auth token).
        timeout: Seconds per export request.

    Returns:
        The exporter.

    Raises:
        ConfigError: Unknown protocol.
        ReplayError: The exporter package is not installed.
    """
    proto = _protocol(protocol)
    try:
        if proto == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    except ImportError as exc:
        pkg = "opentelemetry-exporter-otlp-proto-" + ("grpc" if proto == "grpc" else "http")
        raise ReplayError(f"Replaying over {proto} needs the OTLP exporter: pip install {pkg}.") from exc
    if proto == "grpc":
        if endpoint and "://" not in endpoint:
            endpoint = "http://" + endpoint
        return GrpcExporter(endpoint=endpoint, headers=dict(headers) if headers else None, timeout=timeout)
    if endpoint:
        if "://" not in endpoint:
            endpoint = "http://" + endpoint
        if urlsplit(endpoint).path in ("", "/"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"
    return HttpExporter(endpoint=endpoint, headers=dict(headers) if headers else None, timeout=timeout)


def replay(
    run: Run,
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    batch_size: int = 512,
    exporter: SpanExporter | None = None,
) -> ReplayResult:
    """Send every span of a recorded run to an OTLP endpoint, with its original ids.

    Args:
        run: The run (see :func:`~otelflow.analysis.reader.open_run`).
        endpoint: See :func:`make_exporter`.
        protocol: See :func:`make_exporter`.
        headers: Extra request headers.
        timeout: Seconds per export request.
        batch_size: Spans per export request.
        exporter: Use this span exporter instead of making an OTLP one (it is shut down
            at the end all the same).

    Returns:
        What was sent.

    Raises:
        ReplayError: An export failed (the endpoint is down, refused, or timed out).
        ConfigError: Unknown protocol.
    """
    from opentelemetry.sdk.trace.export import SpanExportResult

    proto = _protocol(protocol) if exporter is None else (protocol or "custom")
    exp = exporter if exporter is not None else make_exporter(endpoint, proto, headers=headers, timeout=timeout)
    skipped = [0]
    sent = batches = 0
    batch: list[ReadableSpan] = []
    where = endpoint or "(from the OTEL_EXPORTER_OTLP_* variables)"
    log = _ExporterLog()

    def flush(spans: Sequence[ReadableSpan]) -> None:
        nonlocal sent, batches
        try:
            result = exp.export(spans)
        except Exception as exc:
            raise ReplayError(f"Exporting spans to {where} failed ({type(exc).__name__}: {exc}).") from exc
        batches += 1
        if result is not SpanExportResult.SUCCESS:
            reason = log.reason()
            raise ReplayError(
                f"The OTLP endpoint {where} did not accept the spans over {proto} "
                f"({f'{reason}; ' if reason else ''}{sent} sent before): check that a collector "
                f"listens there and speaks {proto}."
            )
        sent += len(spans)

    exporter_logger = logging.getLogger(EXPORTER_LOGGER)
    exporter_logger.addHandler(log)
    try:
        for span in readable_spans(run, skipped=skipped):
            batch.append(span)
            if len(batch) >= batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    finally:
        try:
            exp.shutdown()
        except Exception:  # noqa: BLE001 - shutting down a failed exporter may fail too
            pass
        exporter_logger.removeHandler(log)
    return ReplayResult(spans=sent, skipped=skipped[0], batches=batches, protocol=proto, endpoint=endpoint)
