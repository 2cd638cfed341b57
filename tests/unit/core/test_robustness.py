"""Edge cases found in review: each names the behaviour it pins down."""

from __future__ import annotations

import json
import os
import threading

import pytest

import otelflow
from otelflow.events import TaskCompleted
from tests.conftest import read_lines


def _tel(tmp_path, **kw):
    return otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={}, **kw)


def test_stop_from_inside_a_subscriber_closes_the_run(tmp_path):
    tel = _tel(tmp_path)
    result = {}

    def stopper(ev):
        result["summary"] = tel.stop(timeout=5)

    tel.subscribe(stopper, TaskCompleted)
    otelflow.task(lambda: None)()
    tel._stopped.wait(10)
    meta = json.loads((tel.run_dir / "run.json").read_text())
    assert meta["status"] == "completed"
    assert result["summary"]["tasks"]["completed"] == 1


def test_concurrent_stops_return_the_final_summary(tmp_path):
    tel = _tel(tmp_path)
    otelflow.task(lambda: None)()
    out = []
    threads = [threading.Thread(target=lambda: out.append(tel.stop())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s is out[0] for s in out) and out[0]["tasks"]["completed"] == 1


def test_a_disabled_telemetry_does_not_block_a_later_one(tmp_path):
    off = otelflow.start_telemetry(checkpoint_path=str(tmp_path), environ={"OTELFLOW_TELEMETRY": "0"})
    assert not off.active
    on = _tel(tmp_path)
    assert otelflow.current_telemetry() is on
    otelflow.task(lambda: None)()
    assert on.stop()["tasks"]["completed"] == 1


def test_unnamed_workflows_get_a_fresh_id_per_entry_and_a_constant_metric_name(tmp_path):
    tel = _tel(tmp_path)

    @otelflow.workflow_scope()
    def run():
        otelflow.task(lambda: None)()

    run()
    run()
    summary = tel.stop()
    assert len(summary["workflows"]) == 2
    assert {w["name"] for w in summary["workflows"].values()} == {"unnamed"}


def test_depends_on_a_single_string_is_one_dependency(capture):
    trk = otelflow.tracker()
    trk.created("load-1", "load")
    trk.created("fit-1", "fit", depends_on="load-1")
    trk.created("odd", "fit", depends_on=5)  # not iterable: recorded, never raised
    capture.telemetry.stop()
    created = {e["task_id"]: e for e in capture.lines("event") if e["type"] == "TaskCreated"}
    assert created["fit-1"]["depends_on"] == ["load-1"]
    assert created["odd"]["depends_on"] == ["5"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_neither_repeats_task_ids_nor_blocks_on_the_dead_bus(tmp_path):
    tel = _tel(tmp_path, queue_size=1024)
    trk = otelflow.tracker()
    parent_id = trk.new_task_id()
    tracer = tel.tracer()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: ids differ, and 5000 span ends on an inherited tracer return at once
        try:
            import time

            t0 = time.monotonic()
            for _ in range(5000):
                tracer.start_span("in-child").end()
            ok = time.monotonic() - t0 < 5
            os.write(w, f"{trk.new_task_id()}|{ok}".encode())
        finally:
            os._exit(0)
    os.close(w)
    child_id, ok = os.read(r, 200).decode().split("|")
    os.waitpid(pid, 0)
    tel.stop()
    assert ok == "True"
    assert child_id.rsplit("-", 1)[0] != parent_id.rsplit("-", 1)[0]


def test_an_unencodable_value_never_corrupts_the_next_line(capture):
    Loop = otelflow.define_event("t.Loop", x=list)
    cyclic: list = []
    cyclic.append(cyclic)
    otelflow.emit(Loop(x=cyclic))
    otelflow.emit(Loop(x=[1]))
    capture.telemetry.stop()
    good = [e for e in capture.lines("event") if e["type"] == "t.Loop"]  # every line parses
    assert good[-1]["x"] == [1]


def test_user_event_fields_equal_to_their_default_are_still_written(capture):
    Epoch = otelflow.define_event("t.Epoch", epoch=int, loss=(float, 0.0))
    otelflow.emit(Epoch(epoch=0))
    capture.telemetry.stop()
    (line,) = [e for e in capture.lines("event") if e["type"] == "t.Epoch"]
    assert line["epoch"] == 0 and line["loss"] == 0.0


def test_log_lines_have_one_trace_id_and_span_id(tmp_path):
    import logging

    tel = _tel(tmp_path, capture_logs=True)
    logging.getLogger("user.x").warning("hello")
    tel.stop()
    raw = next(
        ln for f in tel.run_dir.glob("*.jsonl") for ln in f.read_text().splitlines() if '"section":"log"' in ln
    )
    assert raw.count('"trace_id"') == 1 and raw.count('"span_id"') == 1
    (rec,) = read_lines(tel.run_dir, "log")
    assert rec["span_id"] == f"{tel.session_span_id:016x}"  # outside any task: the session span
