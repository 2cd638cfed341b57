"""Replay to real OTLP receivers on loopback (HTTP/protobuf and gRPC), ids preserved."""

from __future__ import annotations

import gzip
import json
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelflow.analysis.reader import open_run
from otelflow.analysis.replay import ReplayError, make_exporter, replay
from otelflow.errors import ConfigError


class OtlpHttpReceiver:
    """A minimal OTLP/HTTP trace receiver: decodes each request and keeps it."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                receiver.requests.append(req)
                receiver.paths.append(self.path)
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-http-receiver", daemon=True)

    def spans(self) -> list[tuple[Any, Any, Any]]:
        """Every span received, as (resource, scope, span)."""
        out = []
        for req in self.requests:
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    out.extend((rs.resource, ss.scope, sp) for sp in ss.spans)
        return out


@pytest.fixture
def http_receiver() -> Iterator[OtlpHttpReceiver]:
    rec = OtlpHttpReceiver()
    rec.thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()
    rec.thread.join(timeout=5)


def _attrs(kvs: Any) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        v = kv.value
        field = v.WhichOneof("value")
        if field == "array_value":
            out[kv.key] = [getattr(x, x.WhichOneof("value")) for x in v.array_value.values]
        else:
            out[kv.key] = getattr(v, field)
    return out


def test_replay_over_http_preserves_ids_times_parents_links_status(
    run_dir: Path, http_receiver: OtlpHttpReceiver, synthetic: ModuleType
) -> None:
    run = open_run(run_dir)
    result = replay(run, endpoint=http_receiver.endpoint, protocol="http/protobuf", batch_size=4)
    assert (result.spans, result.skipped, result.batches) == (11, 0, 3)
    assert http_receiver.paths == ["/v1/traces"] * 3  # the signal path was added
    got = http_receiver.spans()
    assert len(got) == 11
    by_id = {sp.span_id.hex(): (res, scope, sp) for res, scope, sp in got}
    for line in run.spans():
        res, scope, sp = by_id[line["span_id"]]
        assert sp.trace_id.hex() == synthetic.TRACE_ID
        assert sp.name == line["name"]
        assert sp.start_time_unix_nano == line["start_time"]
        assert sp.end_time_unix_nano == line["end_time"]
        assert sp.parent_span_id.hex() == (line.get("parent_span_id") or "")
        assert [link.span_id.hex() for link in sp.links] == line.get("links", [])
        assert all(link.trace_id.hex() == synthetic.TRACE_ID for link in sp.links)
        assert _attrs(res.attributes)["service.name"] == "synthetic"
        assert scope.name == "otelflow" and scope.version == "0.0.test"
    _, _, a4 = by_id[synthetic.span_id("a4")]
    assert a4.status.code == Status.STATUS_CODE_ERROR
    assert a4.status.message == "ValueError: bad row 7"
    assert [e.name for e in a4.events] == [
        "TaskCreated",
        "TaskResolved",
        "TaskSubmitted",
        "TaskStarted",
        "TaskFailed",
        "exception",
    ]
    assert a4.events[0].time_unix_nano == synthetic.ns(1)
    assert _attrs(a4.events[-1].attributes) == {"exception.type": "ValueError", "exception.message": "bad row 7"}
    attrs = _attrs(a4.attributes)
    assert attrs["otelflow.task.id"] == "a4"
    assert attrs["otelflow.task.depends_on"] == ["a3"]
    _, _, a1 = by_id[synthetic.span_id("a1")]
    assert a1.status.code == Status.STATUS_CODE_UNSET
    res_attrs = _attrs(got[0][0].attributes)
    assert res_attrs["otelflow.run.id"] == "run-a"
    assert res_attrs["host.name"] == "host"


def test_replay_skips_span_lines_without_ids(run_dir: Path) -> None:
    path = run_dir / "main-host-100.jsonl"
    path.write_text(path.read_text() + '{"section":"span","name":"broken","start_time":1}\n')
    exporter = InMemorySpanExporter()
    result = replay(open_run(run_dir), exporter=exporter)
    assert (result.spans, result.skipped) == (11, 1)
    assert len(exporter.get_finished_spans()) == 11
    assert result.protocol == "custom"


def test_replay_values_json_cannot_map_become_strings(tmp_path: Path, synthetic: ModuleType) -> None:
    d = tmp_path / "r"
    d.mkdir()
    line = {
        "section": "span",
        "trace_id": synthetic.TRACE_ID,
        "span_id": "00000000000000aa",
        "name": "u",
        "kind": "user",
        "scope": "my.lib",
        "start_time": 5,
        "end_time": 3,
        "status": "completed",
        "attributes": {"d": {"x": 1}, "mixed": [1, "a"], "nums": [1, 2.5], "none": None, "big": 2**70},
        "events": [["e", 4], ["bad"]],
        "links": ["zz"],
    }
    (d / "main-h-1.jsonl").write_text(json.dumps(line) + "\n")
    exporter = InMemorySpanExporter()
    replay(open_run(d), exporter=exporter)
    [span] = exporter.get_finished_spans()
    assert span.attributes == {"d": '{"x": 1}', "mixed": '[1, "a"]', "nums": (1.0, 2.5), "big": str(2**70)}
    assert span.end_time == 5  # an end before the start is clamped
    assert span.instrumentation_scope.name == "my.lib"
    assert [e.name for e in span.events] == ["e"]
    assert span.links == ()
    assert span.resource.attributes["service.name"] == "unknown_service"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_replay_to_a_dead_endpoint_raises_one_clear_error(run_dir: Path) -> None:
    endpoint = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ReplayError, match="did not accept the spans"):
        replay(open_run(run_dir), endpoint=endpoint, protocol="http/protobuf", timeout=0.5)


def test_replay_rejected_by_the_endpoint(run_dir: Path) -> None:
    rec = OtlpHttpReceiver(status=400)
    rec.thread.start()
    try:
        with pytest.raises(ReplayError, match=r"over http/protobuf \(HTTP 400 Bad Request; 0 sent before\)"):
            # The 400 comes back in ms; the timeout only has to outlast a loaded machine's stalls.
            replay(open_run(run_dir), endpoint=rec.endpoint, protocol="http/protobuf", timeout=30)
    finally:
        rec.server.shutdown()
        rec.server.server_close()


def test_protocol_validation_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="Unknown OTLP protocol 'thrift'"):
        make_exporter("http://x:1", "thrift")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    exp = make_exporter("127.0.0.1:4317")
    assert type(exp).__module__.startswith("opentelemetry.exporter.otlp.proto.grpc")
    exp.shutdown()
    exp = make_exporter("127.0.0.1:4318", "http")
    assert type(exp).__module__.startswith("opentelemetry.exporter.otlp.proto.http")
    assert exp._endpoint == "http://127.0.0.1:4318/v1/traces"
    exp.shutdown()


def test_replay_over_grpc(run_dir: Path, synthetic: ModuleType) -> None:
    grpc = pytest.importorskip("grpc")
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    received: list[ExportTraceServiceRequest] = []

    class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
            received.append(request)
            return ExportTraceServiceResponse()

    pool = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="otlp-grpc-receiver")
    server = grpc.server(pool)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        result = replay(open_run(run_dir), endpoint=f"127.0.0.1:{port}", protocol="grpc", timeout=30)
    finally:
        server.stop(0).wait(5)
        pool.shutdown(wait=True)
    assert result.spans == 11 and result.protocol == "grpc"
    ids = {sp.span_id.hex() for r in received for rs in r.resource_spans for ss in rs.scope_spans for sp in ss.spans}
    assert synthetic.span_id("b2") in ids and synthetic.SESSION_SPAN in ids
    assert len(ids) == 11
