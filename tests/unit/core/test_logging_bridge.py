"""The logging bridge: records land in the run with trace/span and scope ids, no loops."""

from __future__ import annotations

import logging

import otelflow
from tests.conftest import read_lines


def test_log_records_carry_the_task_span_and_scope(tmp_path):
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path), resource_poll_interval=0, capture_logs=True, environ={}
    )
    log = logging.getLogger("user.pipeline")
    log.setLevel(logging.INFO)

    @otelflow.task(name="step")
    def step():
        log.info("processing %d rows", 42)

    with otelflow.workflow_scope("wf") as wid:
        step()
    logging.getLogger("otelflow.internal").warning("not captured")
    before = len(logging.getLogger().handlers)
    tel.stop()
    assert len(logging.getLogger().handlers) == before - 1  # the handler was removed
    logs = read_lines(tel.run_dir, "log")
    (rec,) = [r for r in logs if r["logger"] == "user.pipeline"]
    assert rec["message"] == "processing 42 rows"
    assert rec["level"] == "INFO"
    assert rec["workflow_id"] == wid
    task_span = next(s for s in read_lines(tel.run_dir, "span") if s["name"] == "step")
    assert rec["span_id"] == task_span["span_id"]
    assert rec["trace_id"] == task_span["trace_id"]
    assert not any(r["logger"].startswith("otelflow") for r in logs)


def test_logs_are_not_captured_unless_asked(capture):
    logging.getLogger("user.quiet").warning("hello")
    capture.telemetry.stop()
    assert capture.lines("log") == []
