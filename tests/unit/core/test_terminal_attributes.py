"""Span attributes known only at a task's end: tracker.completed/failed(attributes=)."""

from __future__ import annotations

import json

import otelflow
from otelflow.analysis.reader import open_run
from otelflow.analysis.report import build_report, format_report
from otelflow.testing import capture


def test_end_attributes_reach_the_otel_span_and_the_jsonl_span(tmp_path):
    with capture(tmp_path) as cap:
        trk = otelflow.tracker(backend="engine")
        trk.created("hit", "lookup", attributes={"engine.key": "k1"})
        trk.completed("hit", attributes={"otelflow.task.from_cache": True, "engine.key": "ignored"})
        trk.created("bad", "lookup")
        trk.failed("bad", "ValueError", attributes={"engine.tries": 3})
        trk.created("plain", "lookup")
        trk.completed("plain")
    spans = {s.attributes["otelflow.task.id"]: s for s in cap.spans("lookup")}
    assert spans["hit"].attributes["otelflow.task.from_cache"] is True
    assert spans["hit"].attributes["engine.key"] == "k1"  # the created() value is kept
    assert spans["bad"].attributes["engine.tries"] == 3
    assert "otelflow.task.from_cache" not in spans["plain"].attributes
    lines = [json.loads(x) for f in cap.telemetry.run_dir.glob("*.jsonl") for x in f.read_text().splitlines()]
    tasks = [r for r in lines if r.get("section") == "span" and r["kind"] == "task"]
    jsonl = {r["attributes"]["otelflow.task.id"]: r for r in tasks}
    assert jsonl["hit"]["attributes"]["otelflow.task.from_cache"] is True


def test_report_lists_engine_measured_phases_by_task_name(tmp_path):
    with capture(tmp_path) as cap:
        trk = otelflow.tracker(backend="engine")
        for i, (send, run) in enumerate([(0.001, 0.5), (0.003, 0.7)]):
            tid = trk.created(f"a{i}", "call")
            trk.started(tid)
            trk.completed(tid, attributes={"otelflow.phase.send_s": send, "otelflow.phase.execution_s": run})
        tid = trk.created("other", "plain")
        trk.completed(tid)
    report = build_report(open_run(cap.telemetry.run_dir))
    phases = report["phases"]
    assert list(phases) == ["call"]
    assert list(phases["call"]) == ["send", "execution"]
    assert phases["call"]["execution"]["count"] == 2
    assert abs(phases["call"]["execution"]["mean"] - 0.6) < 1e-9
    assert abs(phases["call"]["send"]["total"] - 0.004) < 1e-9
    text = format_report(report)
    assert "Phases by task name" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("call") and "600.0ms" in line)
    assert "2.0ms" in row  # mean send
