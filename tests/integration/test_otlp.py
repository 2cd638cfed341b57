"""OTLP over the wire: real gRPC and HTTP receivers on loopback, and Rotel in between.

Each test starts telemetry configured only through ``environ=`` (as a container would),
runs a small session → workflow → block → task workload, stops, and decodes what the
receiver got.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import otelflow
from tests.integration.otlp_receiver import (
    ByteCountingRelay,
    GrpcReceiver,
    HttpReceiver,
    RotelCollector,
    Span,
    run_workload,
)

PROTOCOLS = ["grpc", "http/protobuf"]


@pytest.fixture(params=PROTOCOLS)
def receiver(request: pytest.FixtureRequest) -> Iterator[GrpcReceiver | HttpReceiver]:
    cls = GrpcReceiver if request.param == "grpc" else HttpReceiver
    with cls() as r:
        r.protocol = request.param  # type: ignore[union-attr]
        yield r


def start(tmp_path: Path, **env: str) -> otelflow.Telemetry:
    return otelflow.start_telemetry(checkpoint_path=str(tmp_path / "runs"), resource_poll_interval=0, environ=env)


def by_kind(spans: list[Span]) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {"session": [], "workflow": [], "block": [], "task": []}
    for sp in spans:
        a = sp.attributes
        if "otelflow.task.id" in a:
            out["task"].append(sp)
        elif "otelflow.block.id" in a:
            out["block"].append(sp)
        elif "otelflow.workflow.id" in a:
            out["workflow"].append(sp)
        elif "otelflow.session.id" in a:
            out["session"].append(sp)
    return out


def assert_four_level_tree(spans: list[Span], tel: otelflow.Telemetry, tasks: int) -> None:
    kinds = by_kind(spans)
    assert len(kinds["session"]) == 1
    assert len(kinds["workflow"]) == 1
    assert len(kinds["block"]) == 1
    assert len(kinds["task"]) == tasks
    (session,) = kinds["session"]
    (workflow,) = kinds["workflow"]
    (blk,) = kinds["block"]
    assert {sp.trace_id for sp in spans} == {tel.trace_id}
    assert session.parent_span_id is None
    assert session.span_id == f"{tel.session_span_id:016x}"
    assert workflow.parent_span_id == session.span_id
    assert blk.parent_span_id == workflow.span_id
    assert {t.parent_span_id for t in kinds["task"]} == {blk.span_id}
    assert workflow.name == "workflow etl" and blk.name == "block load-0"
    failed = [t for t in kinds["task"] if t.attributes["otelflow.task.status"] == "failed"]
    assert [t.name for t in failed] == ["parse"]
    assert failed[0].status_code == 2  # STATUS_CODE_ERROR
    assert failed[0].attributes["error.type"] == "ValueError"
    assert all(t.end_time >= t.start_time > 0 for t in kinds["task"])


def test_traces_and_metrics_arrive_with_the_four_level_tree(tmp_path, receiver):
    tel = start(
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=receiver.protocol,
        OTEL_SERVICE_NAME="otlp-test",
    )
    run_workload(tasks=20, failing=1)
    summary = tel.stop()

    spans = receiver.spans()
    assert_four_level_tree(spans, tel, tasks=21)
    assert {sp.resource["service.name"] for sp in spans} == {"otlp-test"}
    assert {sp.resource["otelflow.run.id"] for sp in spans} == {tel.run_id}

    metrics = {m.name: m for m in receiver.metrics()}
    assert metrics["otelflow.tasks.completed"].kind == "sum"
    assert sum(p.as_int for p in metrics["otelflow.tasks.completed"].points) == 20
    assert sum(p.as_int for p in metrics["otelflow.tasks.failed"].points) == 1
    duration = metrics["otelflow.task.duration"]
    assert duration.kind == "histogram" and duration.unit == "s"
    assert sum(p.count for p in duration.points) == 21
    assert {p.attributes[0].key for p in duration.points} >= {"task.name"}
    assert metrics["otelflow.task.dispatch_wait"].kind == "histogram"
    assert metrics["otelflow.task.queue_wait"].kind == "histogram"
    assert "otelflow.task.scheduling_wait" not in metrics  # replaced by dispatch + queue wait
    assert summary["dropped"]["export_failures"] == 0


def test_headers_reach_the_receiver(tmp_path, receiver):
    tel = start(
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=receiver.protocol,
        OTEL_EXPORTER_OTLP_HEADERS="x-tenant=lab-7,authorization=Bearer%20s3cret",
    )
    run_workload(tasks=3, failing=0)
    tel.stop()
    for signal in ("traces", "metrics"):
        headers = receiver.headers(signal)
        assert headers, f"no {signal} request arrived"
        assert all(h["x-tenant"] == "lab-7" for h in headers)
        assert all(h["authorization"] == "Bearer s3cret" for h in headers)
    # ... and the secret is not written to the run directory.
    assert "s3cret" not in (tel.run_dir / "run.json").read_text()


def test_gzip_over_http_is_sent_and_decoded(tmp_path):
    with HttpReceiver() as receiver:
        tel = start(
            tmp_path,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
        )
        run_workload(tasks=50, failing=1)
        tel.stop()
        assert {r.encoding for r in receiver.requests()} == {"gzip"}
        assert_four_level_tree(receiver.spans(), tel, tasks=51)


def test_gzip_over_grpc_shrinks_what_crosses_the_wire(tmp_path):
    sent = {}
    with GrpcReceiver() as receiver:
        for compression in ("none", "gzip"):
            with ByteCountingRelay(receiver.port) as relay:
                tel = start(
                    tmp_path / compression,
                    OTEL_EXPORTER_OTLP_ENDPOINT=relay.endpoint,
                    OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
                    OTEL_EXPORTER_OTLP_COMPRESSION=compression,
                    OTEL_METRICS_EXPORTER="none",
                )
                run_workload(tasks=300, failing=1)
                tel.stop()
                sent[compression] = relay.bytes_up
            assert_four_level_tree([s for s in receiver.spans() if s.trace_id == tel.trace_id], tel, 301)
    # Task spans repeat the same attribute keys and names: gzip takes off well over half.
    assert sent["gzip"] < sent["none"] / 2, sent


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_through_the_rotel_collector(tmp_path, protocol):
    with GrpcReceiver() as backend, RotelCollector(backend.endpoint, tmp_path) as rotel:
        endpoint = rotel.grpc_endpoint if protocol == "grpc" else rotel.http_endpoint
        tel = start(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_PROTOCOL=protocol)
        run_workload(tasks=20, failing=1)
        summary = tel.stop()
        assert summary["dropped"]["export_failures"] == 0
        # Rotel batches for up to 50 ms before forwarding.
        spans = backend.wait_for(lambda: len(backend.spans()) >= 24 and backend.spans(), 10, "spans via Rotel")
        assert_four_level_tree(spans, tel, tasks=21)
        names = backend.wait_for(
            lambda: (
                {"otelflow.tasks.completed", "otelflow.task.duration"} <= backend.metric_names()
                and backend.metric_names()
            ),
            10,
            "metrics via Rotel",
        )
        assert "otelflow.tasks.running" in names
        hist = [m for m in backend.metrics() if m.name == "otelflow.task.duration"]
        assert hist[0].kind == "histogram"
        assert rotel.proc is not None and rotel.proc.poll() is None, rotel.output()
