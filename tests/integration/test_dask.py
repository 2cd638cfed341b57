"""Dask distributed on a real LocalCluster(processes=True, 2 workers): lifecycle, scopes, context.

One cluster serves the module (worker start-up dominates the time); each test starts its
own telemetry run and instruments the client again (which must be idempotent).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

import dask.bag as db  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import otelflow  # noqa: E402
from otelflow import toolkit  # noqa: E402
from otelflow.errors import OtelflowError  # noqa: E402
from otelflow.events import TaskStarted  # noqa: E402
from tests.conftest import read_lines  # noqa: E402
from tests.integration.dask_tasks import boom, flaky, inc, nap, square, traced  # noqa: E402

# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=2, dashboard_address=None)
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def start(tmp_path: Path, **kw: Any) -> otelflow.Telemetry:
    return otelflow.start_telemetry(checkpoint_path=str(tmp_path / "runs"), resource_poll_interval=0, **kw)


def task_spans(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {s["attributes"]["otelflow.task.id"]: s for s in read_lines(run_dir, "span") if s["kind"] == "task"}


def events(run_dir: Path, type_: str) -> list[dict[str, Any]]:
    return [e for e in read_lines(run_dir, "event") if e["type"] == type_]


def span_event(span: dict[str, Any], name: str) -> int:
    return dict(span["events"])[name]


# --- tests ------------------------------------------------------------------------------------


def test_map_and_reduce_are_task_spans_under_the_workflow_with_links_and_worker_times(client, tmp_path):
    tel = start(tmp_path)
    assert otelflow.instrument(client) is client
    with otelflow.workflow_scope("sweep-7"):
        futures = client.map(square, range(100))
        total = client.submit(sum, futures)
        assert total.result() == sum(i * i for i in range(100))
        assert client.submit(nap, 0.2).result() == 0.2
    run_dir = tel.run_dir
    tel.stop()

    spans = task_spans(run_dir)
    assert len(spans) == 102
    (wf,) = [s for s in read_lines(run_dir, "span") if s["name"] == "workflow sweep-7"]
    assert {s["parent_span_id"] for s in spans.values()} == {wf["span_id"]}
    assert {s["status"] for s in spans.values()} == {"completed"}
    inputs = {tid: s for tid, s in spans.items() if s["name"] == "square"}
    assert len(inputs) == 100
    (reduction,) = [s for s in spans.values() if s["name"] == "sum"]
    assert sorted(reduction["links"]) == sorted(s["span_id"] for s in inputs.values())
    assert span_event(reduction, "TaskResolved") >= max(s["end_time"] for s in inputs.values())
    workers = set(client.scheduler_info()["workers"])
    assert {s["attributes"]["otelflow.task.worker"] for s in spans.values()} <= workers
    (napped,) = [s for s in spans.values() if s["name"] == "nap"]
    ran = (napped["end_time"] - span_event(napped, "TaskStarted")) / 1e9
    assert 0.18 <= ran < 1.2  # the 0.2 s nap: sleep sets the floor; the ceiling leaves a second of stalls


def test_user_span_log_and_event_inside_a_task_join_its_trace(client, tmp_path):
    tel = start(tmp_path, capture_logs=True)
    otelflow.instrument(client)
    with otelflow.workflow_scope("ctx") as wid:
        with otelflow.block("a") as block_a:
            futs = client.map(traced, range(2))
        with otelflow.block("b") as block_b:
            futs += client.map(traced, range(2, 4))
        assert client.gather(futs) == [0, 1, 2, 3]
    trace_hex = tel.trace_id
    run_dir = tel.run_dir
    tel.stop()

    ids = {f.key: toolkit.task_span_id(trace_hex, f.key) for f in futs}
    spans = task_spans(run_dir)
    assert {spans[k]["span_id"] for k in ids} == set(ids.values())
    user = [s for s in read_lines(run_dir, "span") if s["name"] == "user-work"]
    assert sorted(s["parent_span_id"] for s in user) == sorted(ids.values())
    assert {s["trace_id"] for s in user} == {trace_hex}
    logs = [r for r in read_lines(run_dir, "log") if r.get("logger") == "tests.dask"]
    assert sorted(r["span_id"] for r in logs) == sorted(ids.values())
    assert {r["trace_id"] for r in logs} == {trace_hex}
    assert {r["workflow_id"] for r in logs} == {wid}
    assert sorted(r["task_id"] for r in logs) == sorted(ids)
    notes = events(run_dir, "tests.DaskNote")
    assert sorted(e["n"] for e in notes) == [0, 1, 2, 3]
    assert {(e["trace_id"], e["session_id"], e["workflow_id"]) for e in notes} == {(trace_hex, tel.session_id, wid)}
    assert {e["n"]: e["block_id"] for e in notes} == {0: block_a, 1: block_a, 2: block_b, 3: block_b}


def test_failures_retries_and_upstream_failures(client, tmp_path):
    tel = start(tmp_path)
    otelflow.instrument(client)
    retried = client.submit(flaky, str(tmp_path / "marker"), retries=1)
    failing = client.submit(boom)
    downstream = client.submit(inc, failing)
    assert retried.result() == "second attempt"
    with pytest.raises(KeyError):
        downstream.result()
    run_dir = tel.run_dir
    tel.stop()

    spans = task_spans(run_dir)
    assert spans[retried.key]["status"] == "completed"
    attempts = sorted(
        (e["attempt"], e["outcome"]) for e in events(run_dir, "dask.TaskAttempt") if e["task_id"] == retried.key
    )
    assert attempts == [(1, "failed: ValueError"), (2, "completed")]
    failed = spans[failing.key]
    assert failed["status"] == "failed"
    assert failed["attributes"]["error.type"] == "KeyError"
    (fail_ev,) = [e for e in events(run_dir, "TaskFailed") if e["task_id"] == failing.key]
    assert "raise KeyError" in fail_ev["stacktrace"]
    down = [e for e in events(run_dir, "TaskFailed") if e["task_id"] == downstream.key]
    assert len(down) == 1 and failing.key in down[0]["error_message"]


def test_a_canceled_task_is_recorded_canceled(client, tmp_path):
    tel = start(tmp_path)
    otelflow.instrument(client)
    running = threading.Event()
    otelflow.subscribe(lambda ev: running.set(), TaskStarted)
    fut = client.submit(nap, 3.0)  # long enough to be still running when the cancel arrives
    assert running.wait(30)
    fut.cancel()
    client.submit(square, 3).result()  # a later task completes normally
    run_dir = tel.run_dir
    deadline = time.monotonic() + 30
    while "canceled" not in {s["status"] for s in task_spans(run_dir).values()} and time.monotonic() < deadline:
        tel.flush()
        time.sleep(0.05)  # polling the run directory for a condition, not a sleep-as-sync
    tel.stop()
    spans = task_spans(run_dir)
    assert spans[fut.key]["status"] == "canceled"


def test_work_stealing_is_an_event_on_the_stolen_task(client, tmp_path):
    tel = start(tmp_path)
    otelflow.instrument(client)
    w1, w2 = sorted(client.scheduler_info()["workers"])
    # All on w1, but allowed elsewhere: the idle w2 steals some (Dask's work stealing).
    futs = [client.submit(nap, 0.3, workers=[w1], allow_other_workers=True, pure=False) for _ in range(16)]
    client.gather(futs)
    run_dir = tel.run_dir
    tel.stop()
    stolen = events(run_dir, "dask.TaskStolen")
    assert stolen, "Dask stole nothing"
    spans = task_spans(run_dir)
    assert (w1, w2) in {(e["victim"], e["thief"]) for e in stolen}
    last_thief = {e["task_id"]: e["thief"] for e in sorted(stolen, key=lambda e: e["event_time"])}
    assert {tid: spans[tid]["attributes"]["otelflow.task.worker"] for tid in last_thief} == last_thief
    assert all(e["span_id"] == spans[e["task_id"]]["span_id"] for e in stolen)  # on the task's span


def test_resource_updates_arrive_for_every_worker(client, tmp_path):
    tel = start(tmp_path)
    otelflow.instrument(client)
    client.submit(square, 2).result()
    workers = set(client.scheduler_info()["workers"])
    client_rec = otelflow.integrations.dask.recorder_of(client)
    assert client_rec is not None and client_rec.flush(timeout=30)  # a round trip to the scheduler
    run_dir = tel.run_dir
    tel.stop()
    updates = [e for e in events(run_dir, "ResourceUpdate") if e.get("device") == "dask-worker"]
    assert {e["node"] for e in updates} == workers
    assert all(e["memory_used_bytes"] > 0 for e in updates)


def test_scopes_reach_delayed_collections_compute_and_persist(client, tmp_path):
    tel = start(tmp_path)
    otelflow.instrument(client)
    with otelflow.workflow_scope("collections"), otelflow.block("b1") as bid:
        a = dask.delayed(square)(3)
        assert a.compute() == 9  # dask.compute through the default client
        assert client.compute(dask.delayed(inc)(a)).result() == 10
        bag = db.from_sequence(range(6), npartitions=3).map(inc)
        assert sorted(bag.compute()) == [1, 2, 3, 4, 5, 6]
        (persisted,) = client.persist([dask.delayed(square)(4)])
        assert persisted.compute() == 16
    run_dir = tel.run_dir
    tel.stop()
    (blk,) = [s for s in read_lines(run_dir, "span") if s["name"] == "block b1"]
    spans = task_spans(run_dir)
    assert len(spans) >= 6
    assert {s["parent_span_id"] for s in spans.values()} == {blk["span_id"]}
    assert {s["attributes"]["otelflow.block.id"] for s in spans.values()} == {bid}


def test_instrumenting_twice_records_each_task_once(client, tmp_path):
    tel = start(tmp_path)
    otelflow.instrument(client)
    otelflow.instrument(client)
    fut = client.submit(square, 5)
    assert fut.result() == 25
    names = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.plugins))
    run_dir = tel.run_dir
    tel.stop()
    assert names.count("otelflow") == 1
    assert [e["task_id"] for e in events(run_dir, "TaskCreated")] == [fut.key]
    assert len([e for e in events(run_dir, "TaskCompleted") if e["task_id"] == fut.key]) == 1


def _forgotten(client: Client, key: str) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not client.run_on_scheduler(lambda dask_scheduler: key in dask_scheduler.tasks):
            return True
        time.sleep(0.05)  # polling the scheduler for a condition
    return False


def test_a_key_computed_again_in_the_same_run_is_a_second_task(client, tmp_path):
    tel = start(tmp_path)
    otelflow.instrument(client)
    first = client.submit(square, 11)
    key = first.key
    assert first.result() == 121
    del first
    assert _forgotten(client, key)
    again = client.submit(square, 11)
    assert again.key == key and again.result() == 121
    run_dir = tel.run_dir
    tel.stop()
    spans = task_spans(run_dir)
    assert {spans[key]["status"], spans[f"{key}#2"]["status"]} == {"completed"}
    assert spans[key]["span_id"] != spans[f"{key}#2"]["span_id"]


def test_a_client_closing_mid_run_leaves_a_complete_run_directory(client, tmp_path):
    tel = start(tmp_path)
    started: set[str] = set()
    running = threading.Condition()

    def on_start(ev: Any) -> None:
        with running:
            started.add(ev.task_id)
            running.notify_all()

    otelflow.subscribe(on_start, TaskStarted)
    other = Client(client.scheduler.address)
    otelflow.instrument(other)
    done = other.submit(square, 7)
    assert done.result() == 49
    # 3 s naps: the closes come well before they could end, however a loaded machine stalls
    # the way from the worker's start to here.
    pending = other.submit(nap, 3.0)
    with running:
        assert running.wait_for(lambda: pending.key in started, 30)
    other.close()  # while `pending` runs
    hasty = Client(client.scheduler.address)
    otelflow.instrument(hasty)
    unsent = hasty.submit(nap, 3.0)
    hasty.close()  # right after submitting: the graph may still be on its way
    run_dir = tel.run_dir
    tel.stop()
    spans = task_spans(run_dir)
    assert spans[done.key]["status"] == "completed"
    assert spans[pending.key]["status"] == "canceled"
    assert spans[unsent.key]["status"] == "canceled"
    report = subprocess.run(
        [sys.executable, "-m", "otelflow", "report", str(run_dir)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    assert run_dir.name in report.stdout


def test_a_cluster_restart_does_not_break_the_next_run(client, tmp_path):
    tel = start(tmp_path / "first")
    otelflow.instrument(client)
    slow = client.submit(nap, 30.0)  # still running when the cluster restarts
    assert client.submit(square, 6).result() == 36
    client.restart()
    first = tel.run_dir
    tel.stop()
    assert task_spans(first)[slow.key]["status"] == "canceled"

    tel = start(tmp_path / "second", capture_logs=True)
    otelflow.instrument(client)
    futs = client.map(traced, range(3))
    assert client.gather(futs) == [0, 1, 2]
    second = tel.run_dir
    trace_hex = tel.trace_id
    tel.stop()
    spans = task_spans(second)
    assert {spans[f.key]["status"] for f in futs} == {"completed"}
    assert all("TaskStarted" in dict(spans[f.key]["events"]) for f in futs)
    user = [s for s in read_lines(second, "span") if s["name"] == "user-work"]
    assert sorted(s["parent_span_id"] for s in user) == sorted(toolkit.task_span_id(trace_hex, f.key) for f in futs)


def test_instrument_names_what_is_wrong(monkeypatch):
    with pytest.raises(TypeError, match=r"distributed\.Client"):
        otelflow.instrument(dask.delayed(inc)(1))  # a dask object, not a client
    fake = type("Client", (), {"__module__": "distributed.client"})()
    monkeypatch.setitem(sys.modules, "otelflow.integrations.dask", None)
    with pytest.raises(OtelflowError, match=r"pip install 'otelflow\[dask\]'"):
        otelflow.instrument(fake)


def test_importing_otelflow_does_not_import_dask():
    code = (
        "import sys, otelflow, otelflow.toolkit\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
