"""Baseline: the naive way to instrument a task with the OTel SDK, for comparison.

Per task: one span started and ended, four counter adds, one histogram record, and four
line-buffered ``json.dumps`` writes — what a straightforward integration does.

    python bench/bench_naive_otel.py --n 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class _Discard(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    n = ap.parse_args().n
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(_Discard(), max_queue_size=1 << 20))
    tracer = tp.get_tracer("naive")
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    meter = mp.get_meter("naive")
    counters = [meter.create_counter(f"tasks.{s}") for s in ("created", "submitted", "started", "completed")]
    hist = meter.create_histogram("task.duration", unit="s")
    attrs = {"task.name": "noop", "workflow.name": "bench"}
    with tempfile.TemporaryDirectory() as d, open(Path(d) / "events.jsonl", "w", buffering=1) as f:
        t0 = time.perf_counter()
        for i in range(n):
            span = tracer.start_span("noop", attributes={"task.id": f"t{i}"})
            for step, c in zip(("created", "submitted", "started", "completed"), counters, strict=True):
                c.add(1, attrs)
                f.write(json.dumps({"type": step, "task_id": f"t{i}", "time": time.time_ns()}) + "\n")
            span.end()
            hist.record(0.001, attrs)
        tp.shutdown()
        total = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"naive OTel: {n} tasks, {total / n * 1e6:.1f} µs/task, peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
