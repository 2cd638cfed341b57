"""The trace tree builds no span for export processors that would refuse it, and counts it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otelflow
from otelflow.sinks._export_logs import ExportHealth
from otelflow.sinks.resilience import ExportGuard, GuardedSpanProcessor
from otelflow.tracing import spans as span_module

TASKS = 5
SPANS = TASKS + 2  # the tasks, their workflow, the session


class Refusing(SpanProcessor):
    """Says whether it refuses spans, as GuardedSpanProcessor does, and counts refusals."""

    def __init__(self, refusing: Any = True) -> None:
        self.otelflow_refusing = refusing
        self.refused = 0
        self.spans: list[ReadableSpan] = []

    def otelflow_refuse(self) -> None:
        self.refused += 1

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


class NeverCalled:
    """An exporter the test fails on if a span reaches it."""

    def export(self, batch: Any) -> Any:
        pytest.fail("a span was exported while the collector was known to be down")

    def shutdown(self) -> None:
        pass


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[ReadableSpan]:
    """Every ReadableSpan the trace tree builds."""
    spans: list[ReadableSpan] = []

    def counting(*args: Any, **kwargs: Any) -> ReadableSpan:
        span = ReadableSpan(*args, **kwargs)
        spans.append(span)
        return span

    monkeypatch.setattr(span_module, "ReadableSpan", counting)
    return spans


def _run(tmp_path: Path, *processors: Any) -> None:
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path / "runs"),
        resource_poll_interval=0,
        span_processors=list(processors),
        environ={},
    )
    trk = otelflow.tracker("test")
    with otelflow.workflow_scope("wf"):
        for i in range(TASKS):
            tid = trk.created(None, f"t{i}")
            trk.started(tid)
            trk.completed(tid)
    tel.stop(timeout=5)


def test_no_span_is_built_while_every_processor_refuses(tmp_path, built):
    proc = Refusing()
    _run(tmp_path, proc)
    assert built == []
    assert proc.spans == []
    assert proc.refused == SPANS


def test_a_refusing_processor_is_skipped_and_the_others_get_each_span_once(tmp_path, built):
    refusing, exporter = Refusing(), InMemorySpanExporter()
    _run(tmp_path, refusing, SimpleSpanProcessor(exporter), Refusing(False))
    assert refusing.spans == [] and refusing.refused == SPANS
    assert len(exporter.get_finished_spans()) == SPANS
    assert len(built) == SPANS  # one span per task or scope, not one per processor


def test_a_processor_that_does_not_refuse_gets_every_span(tmp_path, built):
    proc = Refusing(False)
    _run(tmp_path, proc)
    assert len(proc.spans) == len(built) == SPANS
    assert proc.refused == 0


def test_a_refusing_attribute_that_is_not_a_bool_is_ignored(tmp_path):
    proc = Refusing("yes")  # a mock's attribute, say: the processor gets every span
    _run(tmp_path, proc)
    assert len(proc.spans) == SPANS and proc.refused == 0


def _guarded() -> GuardedSpanProcessor:
    guard = ExportGuard(
        NeverCalled, signal="traces", endpoint="http://x", protocol="grpc", flush_s=0.2, health=ExportHealth()
    )
    return GuardedSpanProcessor(guard, delay_s=0.05)


def test_guarded_processor_refuses_only_while_the_breaker_is_open():
    proc = _guarded()
    try:
        assert proc.otelflow_refusing is False
        proc.guard.down, proc.guard.retry_at = True, time.monotonic() + 3600
        assert proc.otelflow_refusing is True
        proc.guard.retry_at = time.monotonic() - 1  # a probe is due: on_end would queue
        assert proc.otelflow_refusing is False
    finally:
        proc.shutdown()


def test_guarded_processor_counts_unbuilt_spans_as_export_failures(tmp_path, built):
    proc = _guarded()
    proc.guard.down, proc.guard.retry_at = True, time.monotonic() + 3600
    _run(tmp_path, proc)
    assert built == []
    assert proc.refused == proc.otelflow_failures == SPANS
    assert proc.exported == proc.failed == proc.dropped == 0
