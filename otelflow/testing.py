"""Test helpers: record a workflow into memory and assert on what it produced.

    from otelflow.testing import capture

    def test_my_pipeline(tmp_path):
        with capture(tmp_path) as cap:
            run_my_pipeline()
        assert cap.span("load").attributes["otelflow.task.status"] == "completed"
        assert cap.summary["tasks"]["failed"] == 0

``capture()`` starts a real :class:`~otelflow.Telemetry` (real OTel SDK, real JSONL run
directory under ``tmp_path``) with in-memory span and metric sinks, no resource monitor,
and no exporters from the environment. It is also a pytest fixture, ``otelflow_capture``,
when otelflow is installed (registered as a pytest plugin by ``otelflow._pytest_plugin``,
which imports this module only when a test uses the fixture).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelflow.events.model import Event
from otelflow.run_summary import Summary
from otelflow.session import Telemetry

__all__ = ["Captured", "capture"]


class Captured:
    """What a :func:`capture` block recorded. Read it after the block (or after ``flush()``)."""

    def __init__(self, telemetry: Telemetry, spans: InMemorySpanExporter, metrics: InMemoryMetricReader) -> None:
        self.telemetry = telemetry
        self._spans = spans
        self._metrics = metrics
        self.events: list[Event] = []
        self.summary: Summary = {}
        self._sub: Any = None

    @property
    def run_dir(self) -> Path | None:
        """The run directory the capture wrote."""
        return self.telemetry.run_dir

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything emitted so far is processed and delivered."""
        self.telemetry.flush(timeout)
        deadline = time.monotonic() + timeout
        while self._sub is not None and self._sub._queue and time.monotonic() < deadline:
            time.sleep(0.005)

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Finished spans (task, block, workflow, session and your own), optionally by name."""
        spans = list(self._spans.get_finished_spans())
        return spans if name is None else [s for s in spans if s.name == name]

    def span(self, name: str) -> ReadableSpan:
        """The one finished span called ``name`` (AssertionError if there are 0 or several)."""
        found = self.spans(name)
        assert len(found) == 1, f"expected one span named {name!r}, found {len(found)}"
        return found[0]

    def metrics(self) -> dict[str, Metric]:
        """The metrics a reader would collect now, by name."""
        data = self._metrics.get_metrics_data()
        if data is None:
            return {}
        return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}

    def events_of(self, *types: type[Event]) -> list[Event]:
        """Captured events of the given classes, in order."""
        return [e for e in self.events if isinstance(e, types)]


@contextmanager
def capture(tmp_path: str | Path | None = None, **options: Any) -> Iterator[Captured]:
    """Run the block under a fresh, current telemetry recording into memory.

    Args:
        tmp_path: Where the run directory goes (a temporary directory if None).
        **options: More ``start_telemetry()`` options (e.g. ``capture_logs=True``).
    """
    tmp = None
    if tmp_path is None:
        tmp = tempfile.TemporaryDirectory(prefix="otelflow-capture-")
        tmp_path = tmp.name
    spans, metrics = InMemorySpanExporter(), InMemoryMetricReader()
    options.setdefault("resource_poll_interval", 0)
    options.setdefault("environ", {})
    telemetry = Telemetry(
        checkpoint_path=str(tmp_path),
        span_processors=[SimpleSpanProcessor(spans)],
        metric_readers=[metrics],
        **options,
    ).start()
    cap = Captured(telemetry, spans, metrics)
    if telemetry.active:
        cap._sub = telemetry.subscribe(cap.events.append)
    try:
        yield cap
        cap.flush()
        cap.summary = telemetry.summary()
    finally:
        cap.summary = telemetry.stop()
        if tmp is not None:
            tmp.cleanup()
