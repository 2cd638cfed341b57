"""Per-signal export health (issue 13 part 5), against real OTLP receivers on loopback.

A traces-only backend answers metric exports with HTTP 405 (Jaeger) or gRPC UNIMPLEMENTED:
one warning naming metrics, the endpoint and the fix; metrics stop for the run; every
span is delivered and trace failures are 0. An unreachable endpoint's one warning names
every signal it affects. A per-signal HTTP endpoint without a path gets a hint.
"""

from __future__ import annotations

import logging

import pytest

import otelflow
from tests.integration.otlp_receiver import GrpcReceiver, HttpReceiver, closed_port, run_workload

TASKS = 40


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("otelflow") and r.levelno >= logging.WARNING]


def sdk_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("opentelemetry") and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_traces_only_backend_gets_every_span_and_one_warning_about_metrics(tmp_path, caplog, protocol):
    caplog.set_level(logging.INFO)
    receiver = (
        GrpcReceiver(signals=("traces",))
        if protocol == "grpc"
        else HttpReceiver(signals=("traces",), missing_status=405)
    )
    with receiver:
        tel = otelflow.start_telemetry(
            checkpoint_path=str(tmp_path / "runs"),
            resource_poll_interval=0,
            environ={
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                "OTEL_METRIC_EXPORT_INTERVAL": "200",  # several metric exports during the run
            },
        )
        run_workload(tasks=TASKS, failing=0)
        # Wait (on the receiver, not a sleep) until metrics were tried and refused at least once.
        if protocol != "grpc":
            receiver.wait_for(lambda: receiver.refused.get("/v1/metrics"), timeout=20, what="a metric export")
        else:
            receiver.wait_for(lambda: tel.summary()["dropped"]["export_failures_metrics"], timeout=20, what="metrics")
        summary = tel.stop()
        spans = receiver.spans()
    messages = warnings_of(caplog)
    assert len(messages) == 1, messages
    (msg,) = messages
    reason = "gRPC UNIMPLEMENTED" if protocol == "grpc" else "HTTP 405"
    assert f"does not accept metrics ({reason}" in msg
    assert receiver.endpoint in msg
    assert "OTEL_METRICS_EXPORTER=none" in msg and "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT" in msg
    assert "collector" not in msg.lower().split("(")[0]  # not "the collector is down"
    assert sdk_records(caplog) == []  # the exporters' own per-batch records stay out
    # Every span arrived; only metrics failed, and they are counted as such.
    assert len([sp for sp in spans if "otelflow.task.id" in sp.attributes]) == TASKS
    assert len(spans) == TASKS + 3  # + session, workflow, block
    dropped = summary["dropped"]
    assert dropped["export_failures_traces"] == 0
    assert dropped["export_failures_metrics"] > 0
    assert dropped["export_failures_logs"] == 0
    assert dropped["export_failures"] == dropped["export_failures_metrics"]
    if protocol != "grpc":
        # Metrics stopped after the first refusal: no more requests for the rest of the run.
        assert receiver.refused["/v1/metrics"] == 1


def test_an_unreachable_endpoint_names_every_signal_once(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path / "runs"),
        resource_poll_interval=0,
        environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        },
    )
    run_workload(tasks=10, failing=0)
    summary = tel.stop(timeout=10)
    messages = warnings_of(caplog)
    assert len(messages) == 1, messages
    assert messages[0].startswith(
        ("otelflow could not export traces and metrics", "otelflow could not export metrics and traces")
    )
    assert summary["dropped"]["export_failures_traces"] >= 10
    assert summary["dropped"]["export_failures_metrics"] > 0


def test_a_per_signal_http_endpoint_without_a_path_gets_a_hint(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with HttpReceiver() as receiver:
        tel = otelflow.start_telemetry(
            checkpoint_path=str(tmp_path / "runs"),
            resource_poll_interval=0,
            environ={
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,  # no /v1/traces
            },
        )
        run_workload(tasks=5, failing=0)
        summary = tel.stop()
        assert receiver.spans() == []
        assert receiver.refused == {"/": 1}  # tried once, then stopped
    (msg,) = warnings_of(caplog)
    assert "does not accept traces (HTTP 404" in msg
    assert "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as is" in msg
    assert f"{receiver.endpoint}/v1/traces" in msg
    assert summary["dropped"]["export_failures_traces"] == 5 + 3
