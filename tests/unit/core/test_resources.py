"""The resource monitor runs with the telemetry and feeds events, gauges and summary()."""

from __future__ import annotations

import time

import otelflow
from otelflow.events.model import ResourceUpdate
from tests.conftest import read_lines


def test_resource_updates_reach_jsonl_gauges_and_summary(tmp_path, monkeypatch):
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=hpc")
    reader = InMemoryMetricReader()
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path), resource_poll_interval=0.1, metric_readers=[reader], environ={}
    )
    assert tel.resource.attributes["team"] == "hpc"
    node_samples = []
    tel.subscribe(lambda e: e.scope == "node" and node_samples.append(e), ResourceUpdate)
    deadline = time.monotonic() + 30  # three samples at 0.1 s: polled, not slept for
    while len(node_samples) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    tel.flush()
    names = {
        m.name: m
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    summary = tel.stop()
    updates = [e for e in read_lines(tel.run_dir, "event") if e["type"] == "ResourceUpdate"]
    assert {u["scope"] for u in updates} >= {"node", "process"}
    assert len([u for u in updates if u["scope"] == "node"]) >= 3
    mem = names["otelflow.node.memory.utilization"].data.data_points[0]
    assert 0 < mem.value <= 1 and mem.attributes["node"] == tel.node
    rss = {p.attributes["process"]: p.value for p in names["otelflow.process.memory.rss"].data.data_points}
    assert rss["self"] > 0
    node_key = f"node:{tel.node}"
    assert 0 < summary["resources"][node_key]["memory_utilization"] <= 1
    assert "gpu" in summary  # the reason GPU metrics are on or off
