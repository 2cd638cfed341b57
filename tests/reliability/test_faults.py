"""Faults outside (issue 18, part 2, and found item 14): a collector that goes down
mid-run and comes back, one that accepts connections and never answers. The workflow
finishes, the failure is reported once with what was lost, what could be kept is kept.

Also covered elsewhere: OTLP down from the start and a slow collector
(tests/integration/test_collector_down.py), a full disk from the start and mid-run
(test_run_status.py), a taken Prometheus port (test_security.py).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import otelflow
from otelflow.analysis import open_run
from tests.integration.otlp_receiver import LOOPBACK, HttpReceiver
from tests.reliability.conftest import child_env, run_child, write_script


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _poll(cond: Callable[[], object], timeout: float) -> None:
    """Wait up to ``timeout`` for ``cond()`` to be truthy (no failure if it is not)."""
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.02)


def _tasks(tr: otelflow.TaskTracker, prefix: str, n: int) -> None:
    with otelflow.workflow_scope(prefix):
        for i in range(n):
            t = tr.created(f"{prefix}-{i}", "work")
            tr.started(t)
            tr.completed(t)


def test_a_collector_going_down_mid_run_and_coming_back(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="otelflow")
    port = _free_port()
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{LOOPBACK}:{port}",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",
    }
    receiver = HttpReceiver(port=port).start()
    tel = otelflow.start_telemetry(checkpoint_path=tmp_path, resource_poll_interval=0, environ=env)
    tr = otelflow.tracker("faults")
    try:
        _tasks(tr, "before", 10)
        receiver.wait_for(lambda: sum(s.name == "work" for s in receiver.spans()) == 10, 30, "spans before")
    finally:
        receiver.stop()
    _tasks(tr, "down", 10)

    def failures() -> int:
        return int(tel.summary()["dropped"]["export_failures"])

    receiver.wait_for(lambda: failures() > 0, 30, "the outage to be noticed and counted")
    lost_while_down = failures()
    back = HttpReceiver(port=port).start()
    batches = 0
    try:
        # Spans that end while the breaker is open are counted, not kept; the breaker
        # probes again within 5 s, and from then on new spans arrive.
        deadline = time.monotonic() + 60
        while not any(str(s.attributes.get("otelflow.task.id", "")).startswith("after") for s in back.spans()):
            assert time.monotonic() < deadline, "no spans arrived after the collector came back"
            _tasks(tr, f"after{batches}", 10)
            batches += 1
            _poll(back.spans, 1.0)
        summary = tel.stop()
    finally:
        back.stop()
    total = 20 + 10 * batches
    assert summary["tasks"]["completed"] == total  # the workflow finished
    assert summary["dropped"]["export_failures"] >= lost_while_down >= 1
    tasks = open_run(tel.run_dir).tasks()
    assert sum(t.status == "completed" for t in tasks.values()) == total  # the run directory kept all
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "could not export" in r.getMessage()]
    assert warnings and "could not export traces" in warnings[0].getMessage()
    assert len(warnings) == 1  # reported once


_HUNG_CHILD = """
import socket, sys, threading, time, otelflow
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(64)
held = []
def accept():
    while True:
        try:
            held.append(srv.accept()[0])  # accept, never answer
        except OSError:
            return
threading.Thread(target=accept, daemon=True).start()
env = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": sys.argv[2],
    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{srv.getsockname()[1]}",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "120000",
}
tel = otelflow.start_telemetry(checkpoint_path=sys.argv[1], resource_poll_interval=0, environ=env)
tr = otelflow.tracker("x")
for i in range(200):
    tr.completed(tr.created(f"t{i}", "w"))
t0 = time.monotonic()
s = tel.stop(timeout=2.0)
print(f"STOP RETURNED after {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
print("DONE", s["tasks"]["completed"], s["dropped"]["export_failures"], flush=True)
"""


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_collector_that_never_answers_is_bounded_by_the_close_window(tmp_path: Path, protocol: str):
    res = run_child(write_script(tmp_path, _HUNG_CHILD), str(tmp_path / "runs"), protocol, timeout=110, env=child_env())
    assert res.returncode == 0, res.stderr
    done = res.stdout.split()
    assert done[:2] == ["DONE", "200"]
    assert int(done[2]) > 0  # what could not be exported is counted
    # Reported once, and before stop() returned (nothing printed after it).
    err = res.stderr
    assert err.count("otelflow could not export") == 1, err
    assert err.index("otelflow could not export") < err.index("STOP RETURNED")
    # stop(timeout=2) did not wait for the 120 s OTLP timeout (a generous bound: 60 s).
    took = float(err.split("STOP RETURNED after ")[1].split()[0])
    assert took < 60, err
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert open_run(run_dir).status == "completed"
