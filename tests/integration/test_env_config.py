"""Exporter environment variables, end to end through ``start_telemetry(environ=...)``.

A valid value must change what really goes over the wire (to a loopback receiver) or
which port really opens; an invalid one must raise ``ConfigError`` naming the variable
and the value (or, for secrets, naming the variable and hiding the value).
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import otelflow
from otelflow.errors import ConfigError
from tests.integration.otlp_receiver import GrpcReceiver, HttpReceiver, closed_port, run_workload


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcReceiver]:
    with GrpcReceiver() as r:
        yield r


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as r:
        yield r


def run(tmp_path: Path, env: dict[str, str], tasks: int = 5) -> tuple[otelflow.Telemetry, dict[str, Any]]:
    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path / "runs"), resource_poll_interval=0, environ=env)
    run_workload(tasks=tasks, failing=0)
    return tel, tel.stop()


def task_spans(receiver: GrpcReceiver | HttpReceiver) -> list[Any]:
    return [s for s in receiver.spans() if "otelflow.task.id" in s.attributes]


# -- endpoints and protocols ------------------------------------------------------------------


def test_per_signal_traces_endpoint_and_http_protocol(tmp_path, http_receiver, grpc_receiver):
    _, summary = run(
        tmp_path,
        {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": http_receiver.traces_endpoint,  # used as is
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint,  # metrics still go here
            "OTEL_METRICS_EXPORTER": "otlp",
        },
    )
    assert len(task_spans(http_receiver)) == 5 and not http_receiver.requests("metrics")
    assert grpc_receiver.requests("metrics") and not grpc_receiver.requests("traces")
    assert summary["dropped"]["export_failures"] == 0


def test_per_signal_metrics_endpoint_and_grpc_protocol(tmp_path, http_receiver, grpc_receiver):
    run(
        tmp_path,
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": http_receiver.endpoint,
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": grpc_receiver.endpoint,
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
        },
    )
    assert "otelflow.tasks.completed" in grpc_receiver.metric_names()
    assert len(task_spans(http_receiver)) == 5
    assert not http_receiver.requests("metrics") and not grpc_receiver.requests("traces")


def test_generic_http_endpoint_gets_the_signal_paths_appended(tmp_path, http_receiver):
    base = http_receiver.endpoint + "/"  # a trailing slash is fine
    tel, _ = run(tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": base, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert len(task_spans(http_receiver)) == 5
    assert "otelflow.task.duration" in http_receiver.metric_names()
    assert tel.settings.otlp_traces.endpoint == http_receiver.traces_endpoint


# -- exporter selection -------------------------------------------------------------------------


def test_traces_exporter_none_sends_no_spans(tmp_path, grpc_receiver):
    run(tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint, "OTEL_TRACES_EXPORTER": "none"})
    assert grpc_receiver.requests("traces") == []
    assert grpc_receiver.requests("metrics")


def test_metrics_exporter_none_sends_no_metrics(tmp_path, grpc_receiver):
    run(tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint, "OTEL_METRICS_EXPORTER": "none"})
    assert grpc_receiver.requests("metrics") == []
    assert len(task_spans(grpc_receiver)) == 5


def test_no_endpoint_and_no_exporter_means_nothing_leaves_the_process(tmp_path):
    tel, summary = run(tmp_path, {})
    assert tel.settings.traces_exporters == () and tel.settings.metrics_exporters == ()
    assert summary["dropped"]["export_failures"] == 0


def test_metrics_exporter_prometheus_opens_the_port(tmp_path):
    port = closed_port()
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path),
        resource_poll_interval=0,
        environ={
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        },
    )
    run_workload(tasks=3, failing=0)
    tel.flush()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    body = opener.open(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    assert "otelflow_tasks_completed_total" in body
    tel.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


# -- headers, compression, timeout, TLS ---------------------------------------------------------


def test_per_signal_headers_beat_generic_ones(tmp_path, grpc_receiver):
    run(
        tmp_path,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": "x-team=generic,x-common=yes",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-team=traces",
        },
    )
    assert {h["x-team"] for h in grpc_receiver.headers("traces")} == {"traces"}
    assert all("x-common" not in h for h in grpc_receiver.headers("traces"))  # replaced, not merged
    assert {h["x-team"] for h in grpc_receiver.headers("metrics")} == {"generic"}


def test_metrics_compression_env_applies_to_metrics_only(tmp_path, http_receiver):
    run(
        tmp_path,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": http_receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "gzip",
        },
    )
    assert {r.encoding for r in http_receiver.requests("metrics")} == {"gzip"}
    assert {r.encoding for r in http_receiver.requests("traces")} == {""}


def test_timeout_bounds_the_stop_flush_against_a_slow_collector(tmp_path):
    with GrpcReceiver(delay_s=30.0) as slow:
        t = time.perf_counter()
        _, summary = run(
            tmp_path,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": slow.endpoint, "OTEL_EXPORTER_OTLP_TIMEOUT": "300"},
        )
        elapsed = time.perf_counter() - t
    assert elapsed < 10.0, elapsed  # ~0.5 s: the 0.3 s timeout bounds it, never the collector's 30 s
    assert summary["dropped"]["export_failures"] > 0


def test_insecure_false_means_tls_which_a_plaintext_receiver_refuses(tmp_path, grpc_receiver):
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint, "OTEL_METRICS_EXPORTER": "none"}
    _, summary = run(tmp_path / "tls", {**env, "OTEL_EXPORTER_OTLP_INSECURE": "false"})
    assert grpc_receiver.requests() == [] and summary["dropped"]["export_failures"] > 0
    otelflow.stop()
    _, summary = run(tmp_path / "plain", {**env, "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true"})
    assert len(task_spans(grpc_receiver)) == 5 and summary["dropped"]["export_failures"] == 0


def test_metric_export_interval_sends_metrics_during_the_run(tmp_path, grpc_receiver):
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path),
        resource_poll_interval=0,
        environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint,
            "OTEL_METRIC_EXPORT_INTERVAL": "100",
            "OTEL_TRACES_EXPORTER": "none",
        },
    )
    run_workload(tasks=3, failing=0)
    # Two exports at 0.1 s, long before stop(); the deadline only has to stay short of the
    # SDK's default 60 s interval, not tight to 0.2 s.
    grpc_receiver.wait_for(lambda: len(grpc_receiver.requests("metrics")) >= 2, 20, "periodic metric exports")
    tel.stop()


def test_service_name_and_sampler_reach_the_exported_spans(tmp_path, grpc_receiver):
    run(
        tmp_path,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_receiver.endpoint,
            "OTEL_SERVICE_NAME": "env-svc",
            "OTEL_TRACES_SAMPLER": "always_off",
        },
        tasks=10,
    )
    spans = grpc_receiver.spans()
    assert spans and {s.resource["service.name"] for s in spans} == {"env-svc"}
    assert task_spans(grpc_receiver) == []  # sampled out; the scope spans still go


# -- invalid values -----------------------------------------------------------------------------

INVALID = [
    ("OTEL_TRACES_EXPORTER", "zipkin"),
    ("OTEL_METRICS_EXPORTER", "statsd"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector:4317"),
    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"),
    ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "udp"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
    ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd"),
    ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "lz4"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "ten"),
    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-5"),
    ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "0"),
    ("OTEL_EXPORTER_OTLP_INSECURE", "maybe"),
    ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "2"),
    ("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "yesno"),
    ("OTEL_EXPORTER_PROMETHEUS_PORT", "70000"),
    ("OTEL_EXPORTER_PROMETHEUS_HOST", "bad host"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
    ("OTEL_METRIC_EXPORT_TIMEOUT", "soon"),
    ("OTEL_TRACES_SAMPLER", "sometimes"),
    ("OTELFLOW_CONSOLE", "loud"),
]


@pytest.mark.parametrize(("name", "value"), INVALID, ids=[n for n, _ in INVALID])
def test_invalid_value_names_the_variable_and_the_value(tmp_path, name, value):
    env = {name: value}
    if name == "OTEL_EXPORTER_PROMETHEUS_PORT":
        env["OTEL_METRICS_EXPORTER"] = "prometheus"
    with pytest.raises(ConfigError) as err:
        otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ=env)
    message = str(err.value)
    assert name in message and repr(value) in message and "expected" in message
    assert otelflow.current_telemetry() is None


def test_sampler_arg_out_of_range_is_refused(tmp_path):
    env = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}
    with pytest.raises(ConfigError, match=r"OTEL_TRACES_SAMPLER_ARG='2'"):
        otelflow.start_telemetry(checkpoint_path=str(tmp_path), environ=env)


@pytest.mark.parametrize(
    "name", ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS"]
)
def test_invalid_headers_name_the_variable_but_hide_the_value(tmp_path, name):
    with pytest.raises(ConfigError) as err:
        otelflow.start_telemetry(checkpoint_path=str(tmp_path), environ={name: "token-without-equals-s3cret"})
    assert name in str(err.value) and "s3cret" not in str(err.value)


def test_prometheus_port_in_use_names_the_port_and_the_fix(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)}
        with pytest.raises(ConfigError, match=rf"127\.0\.0\.1:{port}.*OTEL_EXPORTER_PROMETHEUS_PORT"):
            otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ=env)
    assert otelflow.current_telemetry() is None
