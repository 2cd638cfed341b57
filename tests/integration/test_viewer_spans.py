"""What a trace viewer shows (issue 13 part 1), checked on what real OTLP receivers got.

A task span is the task's execution (TaskStarted → terminal); its waits are attributes;
a task that never started is a zero-length span with ``otelflow.task.started=false``;
``OTELFLOW_WAIT_SPANS=1`` adds a sibling ``wait <name>`` span from creation to start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import otelflow
from otelflow.events.model import now_ns
from otelflow.integrations import instrument, task_id_of, uninstrument
from tests.integration.otlp_receiver import GrpcReceiver, HttpReceiver

S = 1_000_000_000
MS = 1_000_000


@pytest.fixture(params=["grpc", "http/protobuf"])
def receiver(request: pytest.FixtureRequest) -> Iterator[GrpcReceiver | HttpReceiver]:
    cls = GrpcReceiver if request.param == "grpc" else HttpReceiver
    with cls() as r:
        r.protocol = request.param  # type: ignore[union-attr]
        yield r


def start(tmp_path: Path, receiver: GrpcReceiver | HttpReceiver, **env: str) -> otelflow.Telemetry:
    return otelflow.start_telemetry(
        checkpoint_path=str(tmp_path / "runs"),
        resource_poll_interval=0,
        environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": receiver.protocol,  # type: ignore[union-attr]
            "OTEL_METRICS_EXPORTER": "none",
            **env,
        },
    )


def test_span_of_a_task_that_waited_0_3s_and_ran_0_1s(tmp_path, receiver):
    tel = start(tmp_path, receiver)
    trk = otelflow.tracker("engine")
    t = now_ns()
    tid = trk.created(None, "load", event_time=t)
    trk.submitted(tid, event_time=t + 1 * MS)
    trk.started(tid, event_time=t + 301 * MS)
    trk.completed(tid, event_time=t + 401 * MS)
    summary = tel.stop()
    (span,) = [sp for sp in receiver.spans() if sp.name == "load"]
    assert span.end_time - span.start_time == 100 * MS
    assert span.start_time == t + 301 * MS
    a = span.attributes
    assert a["otelflow.task.queue_wait_s"] == pytest.approx(0.3)
    assert a["otelflow.task.dispatch_wait_s"] == pytest.approx(0.001)
    assert a["otelflow.task.dependency_wait_s"] == 0.0
    assert a["otelflow.task.created_time"] == t
    assert a["otelflow.task.submitted_time"] == t + 1 * MS
    assert a["otelflow.task.started"] is True
    assert [e[0] for e in span.events] == [
        "TaskCreated",
        "TaskResolved",
        "TaskSubmitted",
        "TaskStarted",
        "TaskCompleted",
    ]
    assert span.events[0][1] == t
    # summary() keeps the times: execution 0.1 s, the wait split.
    assert summary["duration_s"]["max"] == pytest.approx(0.1)
    assert summary["queue_wait_s"]["max"] == pytest.approx(0.3)


def test_a_real_pool_task_span_is_its_execution_not_its_wait(tmp_path, receiver):
    tel = start(tmp_path, receiver)
    gate = threading.Event()

    def hold() -> None:  # holds the only worker for 0.3 s from the moment both are queued
        gate.wait(30)
        time.sleep(0.3)

    with ThreadPoolExecutor(1) as pool:
        instrument(pool)
        try:
            first = pool.submit(hold)
            second = pool.submit(time.sleep, 0.1)  # waits ≥ 0.3 s for it, runs 0.1 s
            gate.set()  # a stall between the two submits cannot shorten that wait now
            second.result(timeout=30)
            first.result(timeout=30)
            tid = task_id_of(second)
        finally:
            uninstrument(pool)
    tel.stop()
    (span,) = [sp for sp in receiver.spans() if sp.attributes.get("otelflow.task.id") == tid]
    duration = (span.end_time - span.start_time) / S
    wait = span.attributes["otelflow.task.queue_wait_s"]
    assert duration >= 0.1  # the sleep itself
    assert wait >= 0.2  # most of the first task's 0.3 s
    events = {e[0]: e[1] for e in span.events}
    assert span.start_time == events["TaskStarted"]
    assert span.end_time == events["TaskCompleted"]
    assert wait == pytest.approx((events["TaskStarted"] - events["TaskSubmitted"]) / S)


def test_a_task_that_never_started_is_a_zero_length_span_at_its_end(tmp_path, receiver):
    tel = start(tmp_path, receiver)
    trk = otelflow.tracker("engine")
    t = now_ns()
    tid = trk.created(None, "never", event_time=t)
    trk.queued(tid, event_time=t + 10 * MS)
    trk.canceled(tid, event_time=t + 500 * MS, reason="shutdown")
    tel.stop()
    (span,) = [sp for sp in receiver.spans() if sp.name == "never"]
    assert span.start_time == span.end_time == t + 500 * MS
    assert span.attributes["otelflow.task.started"] is False
    assert span.attributes["otelflow.task.status"] == "canceled"
    assert span.attributes["otelflow.task.queued_time"] == t + 10 * MS
    assert "otelflow.task.queue_wait_s" not in span.attributes  # no wait without a start


def test_wait_spans_show_the_wait_band_next_to_the_task(tmp_path, receiver):
    tel = start(tmp_path, receiver, OTELFLOW_WAIT_SPANS="1")
    trk = otelflow.tracker("engine")
    t = now_ns()
    with otelflow.workflow_scope("wf"):
        tid = trk.created(None, "fit", event_time=t)
        trk.submitted(tid, event_time=t + 5 * MS)
        trk.started(tid, event_time=t + 200 * MS)
        trk.completed(tid, event_time=t + 250 * MS)
    tel.stop()
    spans = {sp.name: sp for sp in receiver.spans()}
    task, wait = spans["fit"], spans["wait fit"]
    assert (wait.start_time, wait.end_time) == (t, t + 200 * MS)
    assert (task.start_time, task.end_time) == (t + 200 * MS, t + 250 * MS)
    assert wait.parent_span_id == task.parent_span_id == spans["workflow wf"].span_id
    assert wait.links == (task.span_id,)
    assert wait.attributes["otelflow.task.id"] == tid
    assert wait.attributes["otelflow.task.queue_wait_s"] == pytest.approx(0.195)


def test_no_wait_spans_by_default(tmp_path, receiver):
    tel = start(tmp_path, receiver)
    trk = otelflow.tracker("engine")
    tid = trk.created(None, "fit")
    trk.started(tid)
    trk.completed(tid)
    tel.stop()
    names = [sp.name for sp in receiver.spans()]
    assert "fit" in names and not any(n.startswith("wait ") for n in names)
