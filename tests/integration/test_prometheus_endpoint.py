"""The Prometheus scrape endpoint: real HTTP scrapes on loopback, names, clean shutdown."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

import otelflow
from otelflow.errors import ConfigError
from tests.integration.otlp_receiver import run_workload

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def prometheus_address(tel: otelflow.Telemetry) -> tuple[str, int]:
    """The endpoint's bound address: public ``Telemetry.prometheus_address`` when the session
    exposes it, else what ``build_exporters`` recorded."""
    addr = getattr(tel, "prometheus_address", None) or tel._exporters.prometheus_address
    assert addr is not None
    return addr


def scrape(addr: tuple[str, int]) -> str:
    return _opener.open(f"http://{addr[0]}:{addr[1]}/metrics", timeout=30).read().decode()


def start(tmp_path: Path, **kwargs: object) -> otelflow.Telemetry:
    return otelflow.start_telemetry(
        checkpoint_path=str(tmp_path / "runs"), resource_poll_interval=0, environ={}, **kwargs
    )


def test_exposition_follows_prometheus_conventions(tmp_path):
    tel = start(tmp_path, prometheus_port=0, service_name="prom-svc")
    run_workload(tasks=5, failing=1)
    tel.flush()
    addr = prometheus_address(tel)
    assert addr[0] == "127.0.0.1" and addr[1] > 0  # default bind: loopback only
    text = scrape(addr)
    tel.stop()

    families = {f.name: f for f in text_string_to_metric_families(text)}  # parses: valid exposition
    samples = {s.name: s for f in families.values() for s in f.samples}
    completed = [s for s in families["otelflow_tasks_completed"].samples if s.name.endswith("_total")]
    assert families["otelflow_tasks_completed"].type == "counter"
    assert {(s.labels["task_name"], s.value) for s in completed} == {("read", 5.0)}
    assert completed[0].labels["workflow_name"] == "etl"
    assert "task_id" not in completed[0].labels  # bounded cardinality
    assert families["otelflow_tasks_failed"].samples[0].value == 1.0

    duration = families["otelflow_task_duration_seconds"]
    assert duration.type == "histogram"
    buckets = [s for s in duration.samples if s.name == "otelflow_task_duration_seconds_bucket"]
    assert {s.labels["le"] for s in buckets} >= {"0.001", "1.0", "+Inf"}
    assert "otelflow_task_duration_seconds_count" in samples

    assert families["otelflow_tasks_running"].type == "gauge"
    info = families["target_info"].samples[0]  # the OTel resource
    assert info.name == "target_info"
    assert info.labels["service_name"] == "prom-svc"
    assert info.labels["otelflow_run_id"] == tel.run_id

    for line in (
        "otelflow_tasks_completed_total{",
        "otelflow_task_duration_seconds_bucket{",
        "otelflow_tasks_running{",
    ):
        assert line in text
    assert "target_info{" in text and 'service_name="prom-svc"' in text


def test_scrape_during_the_run_shows_live_values(tmp_path):
    tel = start(tmp_path, prometheus_port=0)
    trk = otelflow.tracker()
    with otelflow.workflow_scope("live"):
        tids = [trk.created(None, "sim") for _ in range(3)]
        for tid in tids:
            trk.started(tid)
        tel.flush()
        text = scrape(prometheus_address(tel))
        assert "otelflow_tasks_running{" in text
        running = [
            s.value
            for f in text_string_to_metric_families(text)
            if f.name == "otelflow_tasks_running"
            for s in f.samples
            if s.labels.get("task_name") == "sim"
        ]
        assert running == [3.0]
        for tid in tids:
            trk.completed(tid)
    tel.stop()


def test_stop_closes_the_endpoint_and_frees_the_port(tmp_path):
    tel = start(tmp_path / "a", prometheus_port=0)
    host, port = prometheus_address(tel)
    scrape((host, port))
    thread = tel._exporters.prometheus_thread
    tel.stop()
    assert not thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=0.5).close()
    # The port can be bound again at once, as a server binds (SO_REUSEADDR: the scrape's
    # connection may linger in TIME_WAIT, but nothing listens any more) ...
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind((host, port))
        again.listen(1)
    # ... and the next session can serve on that very port.
    tel = start(tmp_path / "b", prometheus_port=port)
    assert prometheus_address(tel)[1] == port
    assert "target_info" in scrape((host, port))
    tel.stop()


def test_sessions_use_a_private_registry(tmp_path):
    for i in range(2):  # a second session in the same process: no duplicate-series clash
        tel = start(tmp_path / str(i), prometheus_port=0)
        run_workload(tasks=2, failing=0)
        tel.flush()
        assert "otelflow_tasks_completed_total" in scrape(prometheus_address(tel))
        tel.stop()
    global_names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("otelflow") for name in global_names)


def test_fixed_port_in_use_is_a_config_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            start(tmp_path, prometheus_port=port)
    assert otelflow.current_telemetry() is None
