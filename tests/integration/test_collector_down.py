"""A collector that is down or slow costs the workflow nothing.

With the OTLP endpoint on a closed loopback port, a 1 000-task run takes about as long
as without any exporter, logs exactly one warning (and none of the OTel exporters' own
per-batch records), writes a complete run directory, and counts what it could not
export. A collector that answers slowly blocks neither ``emit()`` nor, beyond the OTLP
timeout, ``stop()``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

import otelflow
from otelflow.sinks import resilience
from otelflow.sinks._export_logs import ExportHealth, install_log_filter, uninstall_log_filter
from otelflow.sinks.resilience import ExportGuard, GuardedSpanProcessor
from tests.conftest import read_lines
from tests.integration.otlp_receiver import GrpcReceiver, HttpReceiver, closed_port, run_workload

TASKS = 1000


def timed_run(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[float, float, dict[str, Any], Path]:
    """Start, run 1 000 tasks in 4 blocks, stop. Returns (total s, stop s, summary, run dir)."""
    t0 = time.perf_counter()
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path / name), resource_poll_interval=0, service_name=name, environ=env
    )
    run_workload(tasks=TASKS // 4, failing=0, blocks=4)
    t1 = time.perf_counter()
    summary = tel.stop()
    t2 = time.perf_counter()
    assert tel.run_dir is not None
    return t2 - t0, t2 - t1, summary, tel.run_dir


def sdk_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("opentelemetry") and r.levelno >= logging.WARNING]


def otelflow_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("otelflow") and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_closed_port_costs_little_time_warns_once_and_keeps_the_run(tmp_path, caplog, protocol):
    caplog.set_level(logging.INFO)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    down = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    timed_run(tmp_path, "warmup", down)  # imports, gRPC/HTTP stacks, first-call caches
    caplog.clear()

    base_total, base_stop, _, _ = min(timed_run(tmp_path, f"base{i}", {}) for i in range(2))
    down_total, down_stop, summary, run_dir = min(timed_run(tmp_path, f"down{i}", down) for i in range(2))
    print(
        f"\n[{protocol}] 1000 tasks: no exporter {base_total:.3f} s (stop {base_stop:.3f} s); "
        f"collector down {down_total:.3f} s (stop {down_stop:.3f} s); "
        f"export_failures={summary['dropped']['export_failures']}"
    )
    # Not a timing race: the SDK on its own retries a closed port with backoff for its whole
    # 10 s timeout per export; otelflow's breaker makes stop() skip that. 5 s is a 2x margin.
    assert down_stop < 5.0, (base_stop, down_stop)

    # One otelflow warning per session, naming the endpoint and the fix; no SDK flood.
    warnings = otelflow_warnings(caplog)
    assert len(warnings) == 2, [r.getMessage() for r in warnings]  # the two measured sessions
    message = warnings[0].getMessage()
    assert endpoint in message and "OTEL_EXPORTER_OTLP_ENDPOINT" in message and "=none" in message
    assert sdk_records(caplog) == []

    # The run directory is complete: every task span, the scopes, run.json.
    spans = read_lines(run_dir, "span")
    assert sum(1 for s in spans if s["kind"] == "task") == TASKS
    assert {s["kind"] for s in spans} == {"task", "block", "workflow", "session"}
    assert summary["tasks"]["completed"] == TASKS
    assert summary["dropped"]["events"] == 0
    # Everything sent to the exporters was lost, and counted: 1 006 spans plus metric points.
    assert summary["dropped"]["export_failures"] >= TASKS + 6
    assert (run_dir / "run.json").read_text().count('"completed"') >= 1


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_closed_port_stop_is_quick_even_with_logging_switched_off(tmp_path, protocol):
    """The exporters' retry warnings are one way otelflow notices a dead collector; with
    logging off, the shutdown reachability check must still spare stop() the backoff."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    logging.disable(logging.CRITICAL)
    try:
        _, stop_s, summary, run_dir = timed_run(tmp_path, "quiet", env)
    finally:
        logging.disable(logging.NOTSET)
    assert stop_s < 5.0, stop_s  # the SDK's own retries alone take its 10 s timeout
    assert summary["dropped"]["export_failures"] >= TASKS
    assert sum(1 for s in read_lines(run_dir, "span") if s["kind"] == "task") == TASKS


_SCRIPT = """
import otelflow
with otelflow.start_telemetry(resource_poll_interval=0):
    with otelflow.workflow_scope("etl"), otelflow.block("load"):
        for i in range(2000):
            otelflow.task(lambda: None, name="noop")()
"""


def test_a_plain_script_shows_one_warning_on_stderr_and_no_sdk_flood(tmp_path):
    """No logging configured (so otelflow's NullHandler would hide a plain log call), the
    collector down for a 2000-task run: stderr gets exactly one line, otelflow's."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELFLOW_"))},
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "OTELFLOW_RUNS_DIR": str(tmp_path),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("otelflow could not export") and env["OTEL_EXPORTER_OTLP_ENDPOINT"] in lines[0]


@pytest.mark.parametrize("receiver_cls", [GrpcReceiver, HttpReceiver], ids=["grpc", "http"])
def test_slow_collector_blocks_neither_emit_nor_stop(tmp_path, caplog, receiver_cls):
    caplog.set_level(logging.INFO)
    protocol = "grpc" if receiver_cls is GrpcReceiver else "http/protobuf"
    # Timing bounds sit halfway between what "not blocked" costs (µs per step) and what any
    # wait on the collector would cost (a whole export timeout), so a loaded CI machine's
    # stalls of a few hundred ms cannot fail the test and a real wait cannot pass it.
    timeout_s = 2.0
    with receiver_cls(delay_s=30.0) as slow:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": slow.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_TIMEOUT": str(int(timeout_s * 1000)),  # one export, and the stop() flush window
        }
        tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ=env)
        trk = otelflow.tracker()
        worst = 0.0
        t0 = time.perf_counter()
        for i in range(2000):  # several 512-span batches: the exporter thread is stuck on the first
            tid = trk.created(f"t{i}", "work")
            s = time.perf_counter()
            trk.started(tid)
            trk.completed(tid)
            worst = max(worst, time.perf_counter() - s)
        emitted = time.perf_counter() - t0
        assert tel.flush(10)
        t1 = time.perf_counter()
        summary = tel.stop()
        stopped = time.perf_counter() - t1
    print(
        f"\n[{protocol}] slow collector: 2000 tasks emitted in {emitted:.3f} s "
        f"(worst step {worst * 1e3:.2f} ms), stop {stopped:.3f} s"
    )
    # µs per step in practice; a step that waited on one export would take ≥ timeout_s, and
    # the 2000 tasks fill several batches, so waiting on exports would take several timeouts.
    assert worst < timeout_s / 2 and emitted < timeout_s, (worst, emitted)
    # The flush window (timeout_s), an abort, and the local drain; never the collector's 30 s.
    assert stopped < timeout_s + 3.0, stopped
    assert summary["tasks"]["completed"] == 2000
    assert len(read_lines(tel.run_dir, "span")) >= 2001
    assert summary["dropped"]["export_failures"] > 0
    assert len(otelflow_warnings(caplog)) == 1
    assert sdk_records(caplog) == []


def _span(i: int) -> ReadableSpan:
    ctx = SpanContext(0xABC, i + 1, False, TraceFlags(TraceFlags.SAMPLED))
    return ReadableSpan(name=f"s{i}", context=ctx, resource=Resource({}), start_time=1, end_time=2)


def test_breaker_fails_fast_while_down_and_recovers(monkeypatch, caplog):
    """The circuit breaker itself, with a real HTTP exporter and a receiver that comes up late."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(resilience, "FIRST_COOLDOWN_S", 0.3)
    port = closed_port()
    endpoint = f"http://127.0.0.1:{port}/v1/traces"
    guard = ExportGuard(
        lambda: OTLPSpanExporter(endpoint=endpoint, timeout=0.5),
        signal="traces",
        endpoint=endpoint,
        protocol="http/protobuf",
        flush_s=1.0,
        health=ExportHealth(),
    )
    install_log_filter()
    proc = GuardedSpanProcessor(guard, batch_size=10, delay_s=0.05)
    try:
        for i in range(10):
            proc.on_end(_span(i))
        deadline = time.monotonic() + 30  # a deadline that only a failing test waits out
        while not guard.down and time.monotonic() < deadline:
            time.sleep(0.01)
        assert guard.down and proc.failed == 10
        attempts = guard.failed_exports

        # While the breaker is open: dropped at once, the exporter is not even called.
        assert guard.run(lambda exporter: pytest.fail("exporter called while the breaker is open")) is False
        assert guard.failed_exports == attempts

        # The collector comes up on that port; the next probe gets through.
        with HttpReceiver(port=port) as receiver:
            time.sleep(0.35)
            for i in range(10, 20):
                proc.on_end(_span(i))
            receiver.wait_for(lambda: len(receiver.spans()) == 10, 30, "spans after recovery")
            assert not guard.down
            assert proc.exported == 10 and proc.failed == 10
            proc.shutdown()
    finally:
        proc.shutdown()
        uninstall_log_filter()
    warnings = otelflow_warnings(caplog)
    assert len(warnings) == 1 and endpoint in warnings[0].getMessage()
    assert any("takes traces again" in r.getMessage() for r in caplog.records)
    assert sdk_records(caplog) == []


def test_an_exporter_that_raises_is_counted_not_propagated(caplog):
    class Broken:
        def export(self, batch: Any) -> Any:
            raise RuntimeError("exporter bug")

        def shutdown(self) -> None:
            pass

    guard = ExportGuard(
        Broken, signal="traces", endpoint="http://x", protocol="grpc", flush_s=1.0, health=ExportHealth()
    )
    proc = GuardedSpanProcessor(guard, batch_size=5, delay_s=0.05)
    for i in range(7):
        proc.on_end(_span(i))
    proc.shutdown()
    assert proc.otelflow_failures == 7
    assert "RuntimeError: exporter bug" in caplog.text


def test_queue_full_is_counted(caplog):
    class Stuck:
        def __init__(self) -> None:
            import threading

            self.release = threading.Event()

        def export(self, batch: Any) -> Any:
            self.release.wait(30)  # until shutdown() releases it
            from opentelemetry.sdk.trace.export import SpanExportResult

            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            self.release.set()

    stuck = Stuck()
    guard = ExportGuard(
        lambda: stuck, signal="traces", endpoint="http://x", protocol="grpc", flush_s=0.2, health=ExportHealth()
    )
    proc = GuardedSpanProcessor(guard, max_queue=100, batch_size=10, delay_s=0.01)
    t = time.perf_counter()
    for i in range(1000):
        proc.on_end(_span(i))
    # on_end never waits for the exporter: ms in practice; waiting on the stuck export would
    # take its 30 s. The ceiling sits far from both, where a loaded machine cannot reach it.
    assert time.perf_counter() - t < 5.0
    proc.shutdown()
    assert proc.dropped >= 800
    assert proc.exported + proc.otelflow_failures == 1000
