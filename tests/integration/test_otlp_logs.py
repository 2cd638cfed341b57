"""OTEL_LOGS_EXPORTER=otlp: captured records reach a real OTLP receiver as OTel log records
with the trace and span ids of where they were logged (gRPC and HTTP), and console works."""

from __future__ import annotations

import logging

import pytest

import otelflow
from tests.conftest import read_lines
from tests.integration.otlp_receiver import GrpcReceiver, HttpReceiver


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_captured_logs_reach_a_real_receiver_with_trace_and_span_ids(tmp_path, protocol):
    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    log = logging.getLogger("myapp")
    log.setLevel(logging.INFO)
    with receiver:
        tel = otelflow.start_telemetry(
            checkpoint_path=str(tmp_path), resource_poll_interval=0,
            environ={"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                     "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",  # logs alone
                     "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTELFLOW_CAPTURE_LOGGERS": "myapp",
                     "OTEL_SERVICE_NAME": "logs-test"},
        )

        @otelflow.task(name="train")
        def train() -> None:
            log.info("epoch %d done", 3, extra={"myapp.loss": 0.5, "myapp.tags": ["a"]})

        train()
        log.warning("outside")
        summary = tel.stop()
        got = receiver.wait_for(lambda: len(receiver.logs()) >= 2 and receiver.logs(), what="2 log records")
    assert summary["dropped"]["export_failures"] == 0
    by_body = {r.body: r for r in got}
    inside, outside = by_body["epoch 3 done"], by_body["outside"]
    span = next(s for s in read_lines(tel.run_dir, "span") if s["name"] == "train")
    session = next(s for s in read_lines(tel.run_dir, "span") if s["name"].startswith("session"))
    assert (inside.trace_id, inside.span_id) == (span["trace_id"], span["span_id"])
    assert (outside.trace_id, outside.span_id) == (session["trace_id"], session["span_id"])
    assert inside.severity_text == "INFO" and inside.severity_number == 9
    assert outside.severity_text == "WARNING" and outside.severity_number == 13
    assert inside.attributes["myapp.loss"] == 0.5 and inside.attributes["myapp.tags"] == '["a"]'
    assert inside.attributes["otelflow.task.id"] == span["attributes"]["otelflow.task.id"]
    assert inside.attributes["logger.name"] == "myapp"
    assert inside.resource["service.name"] == "logs-test"


def test_console_log_exporter_prints_the_records(tmp_path, capsys):
    log = logging.getLogger("myapp")
    log.setLevel(logging.INFO)
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path), resource_poll_interval=0, logs_exporter="console",
        capture_loggers=["myapp"], environ={},
    )
    log.warning("printed to the console")
    tel.stop()
    out = capsys.readouterr().out
    assert "printed to the console" in out and f"0x{tel.trace_id}" in out


def test_a_dead_collector_costs_one_warning_and_counts_what_was_lost(tmp_path, caplog):
    from tests.integration.otlp_receiver import closed_port

    log = logging.getLogger("myapp")
    log.setLevel(logging.INFO)
    caplog.set_level(logging.DEBUG)
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path), resource_poll_interval=0,
        environ={"OTEL_LOGS_EXPORTER": "otlp", "OTELFLOW_CAPTURE_LOGGERS": "myapp",
                 "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"http://127.0.0.1:{closed_port()}"},
    )
    for i in range(10):
        log.info("lost %d", i)
    summary = tel.stop(timeout=10)
    assert summary["dropped"]["export_failures"] == 10
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name != "myapp"]
    assert len(warnings) == 1 and warnings[0].name == "otelflow"
    assert "could not export logs" in warnings[0].getMessage()
    assert "OTEL_LOGS_EXPORTER=none" in warnings[0].getMessage()
    assert len(read_lines(tel.run_dir, "log")) == 10  # the run directory has them all
