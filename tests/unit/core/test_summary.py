"""summary(): counts, duration stats, waits, workflows — from running aggregates."""

from __future__ import annotations

import otelflow
from otelflow.events.model import now_ns
from otelflow.metrics.aggregates import Sketch

S = 1_000_000_000


def test_summary_counts_durations_waits_and_workflows(capture):
    trk = otelflow.tracker("t")
    t = now_ns()
    with otelflow.workflow_scope("wf-sum") as wid:
        for i in range(1, 11):  # durations 1..10 s
            tid = trk.created(None, "sim", event_time=t)
            trk.submitted(tid, event_time=t + S)
            trk.started(tid, event_time=t + 3 * S)
            trk.completed(tid, event_time=t + 3 * S + i * S)
        bad = trk.created(None, "sim", event_time=t)
        trk.started(bad, event_time=t + S)
        trk.failed(bad, ValueError("x"), event_time=t + 2 * S)
    s = capture.telemetry.stop()
    assert s["tasks"]["created"] == 11
    assert s["tasks"]["completed"] == 10
    assert s["tasks"]["failed"] == 1
    d = s["duration_s"]
    assert d["count"] == 11
    assert d["min"] == 1.0 and d["max"] == 10.0
    assert abs(d["mean"] - 56 / 11) < 1e-9
    assert abs(d["p50"] - 5.0) / 5.0 < 0.03
    # 11 durations: 1 (the failure), 1..10; exact p95 by rank 0.95 * 10 = 9.5 -> 9..10
    assert 9.0 * 0.98 <= d["p95"] <= 10.0
    assert s["scheduling_wait_s"]["max"] == 3.0  # resolved at creation (no upstream) -> started
    assert s["dependency_wait_s"]["max"] == 0.0
    wf = s["workflows"][wid]
    assert wf["name"] == "wf-sum"
    assert wf["tasks"] == {"completed": 10, "failed": 1, "canceled": 0}
    assert wf["duration_s"] >= 12.9  # the workflow span ends with its last task (t + 13 s)
    assert s["by_task_name"]["sim"]["count"] == 11


def test_sketch_quantiles_are_within_two_percent():
    sk = Sketch()
    values = [0.001 * (i + 1) for i in range(10_000)]
    for v in values:
        sk.add(v)
    for q in (0.5, 0.95, 0.99):
        exact = values[int(q * (len(values) - 1))]
        assert abs(sk.quantile(q) - exact) / exact < 0.02
