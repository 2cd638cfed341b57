"""A worker that joins the run with export=True sends its own spans over OTLP."""

from __future__ import annotations

import multiprocessing as mp
import os

import otelflow
from otelflow import toolkit
from tests.integration.otlp_receiver import HttpReceiver


def _worker(c: toolkit.Carrier, endpoint: str) -> None:
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
    from opentelemetry import trace

    assert toolkit.join_run(c, forward=lambda data: None, export=True) is not None
    with toolkit.task_context(c, "t-exported"), trace.get_tracer("user").start_as_current_span("on-the-worker"):
        pass
    toolkit.leave_run()


def test_a_worker_exports_its_spans_with_its_own_otlp_settings(tmp_path):
    with HttpReceiver() as receiver:
        tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={})
        c = toolkit.carrier("t-exported")
        assert c is not None
        proc = mp.get_context("spawn").Process(target=_worker, args=(c, receiver.endpoint))
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
        tel.stop()
        spans = receiver.wait_for(lambda: [s for s in receiver.spans() if s.name == "on-the-worker"], 10, "worker span")
    span = spans[0]
    assert span.trace_id == tel.trace_id
    assert span.parent_span_id == toolkit.task_span_id(tel.trace_id, "t-exported")
    assert receiver.requests("metrics") == []  # the worker counts no tasks: it exports no metrics
