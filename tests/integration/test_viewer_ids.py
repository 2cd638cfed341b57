"""Traces you can tell apart and paste (issue 13 parts 2 and 4), on real OTLP receivers.

The session span is named after the service and run (or ``name=``) and carries the run and
session ids; a session/workflow/block with failed tasks is ERROR with ``N of M tasks
failed``; the W3C 32-hex trace id is what ``telemetry.trace_id``, ``summary()``,
``run.json``, the console and ``otelflow report`` show.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import otelflow
from otelflow.analysis import open_run
from otelflow.analysis.report import build_report, format_report
from tests.integration.otlp_receiver import GrpcReceiver, HttpReceiver

ERROR = 2  # STATUS_CODE_ERROR
UNSET = 0


@pytest.fixture(params=["grpc", "http/protobuf"])
def receiver(request: pytest.FixtureRequest) -> Iterator[GrpcReceiver | HttpReceiver]:
    cls = GrpcReceiver if request.param == "grpc" else HttpReceiver
    with cls() as r:
        r.protocol = request.param  # type: ignore[union-attr]
        yield r


def start(tmp_path: Path, receiver: GrpcReceiver | HttpReceiver, **kw: object) -> otelflow.Telemetry:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": receiver.protocol,  # type: ignore[union-attr]
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "sweep",
    }
    return otelflow.start_telemetry(checkpoint_path=str(tmp_path / "runs"), resource_poll_interval=0, environ=env, **kw)


def workload(fail: int, ok: int) -> None:
    trk = otelflow.tracker("engine")
    with otelflow.workflow_scope("etl"):
        with otelflow.block("load"):
            for _ in range(ok):
                tid = trk.created(None, "read")
                trk.started(tid)
                trk.completed(tid)
        with otelflow.block("parse"):
            for _ in range(fail):
                tid = trk.created(None, "parse")
                trk.started(tid)
                trk.failed(tid, ValueError("bad shard"))
    with otelflow.workflow_scope("clean"):
        tid = trk.created(None, "tidy")
        trk.started(tid)
        trk.completed(tid)


def test_session_span_is_named_after_service_and_run_and_carries_the_ids(tmp_path, receiver):
    tel = start(tmp_path, receiver)
    workload(fail=0, ok=2)
    tel.stop()
    (session,) = [sp for sp in receiver.spans() if sp.parent_span_id is None]
    assert session.name == f"session sweep {tel.run_id}"
    assert session.attributes["otelflow.run.id"] == tel.run_id
    assert session.attributes["otelflow.session.id"] == tel.session_id
    assert session.status_code == UNSET
    assert session.attributes["otelflow.tasks.completed"] == 3


def test_name_argument_names_the_session_span(tmp_path, receiver):
    tel = start(tmp_path, receiver, name="nightly climate sweep")
    workload(fail=0, ok=1)
    tel.stop()
    (session,) = [sp for sp in receiver.spans() if sp.parent_span_id is None]
    assert session.name == "nightly climate sweep"
    assert session.attributes["otelflow.run.id"] == tel.run_id


def test_failed_tasks_make_session_workflow_and_block_spans_error_with_counts(tmp_path, receiver):
    tel = start(tmp_path, receiver)
    workload(fail=2, ok=3)
    tel.stop()
    spans = {sp.name: sp for sp in receiver.spans()}
    session = spans[f"session sweep {tel.run_id}"]
    assert (session.status_code, session.status_message) == (ERROR, "2 of 6 tasks failed")
    etl = spans["workflow etl"]
    assert (etl.status_code, etl.status_message) == (ERROR, "2 of 5 tasks failed")
    assert (etl.attributes["otelflow.tasks.completed"], etl.attributes["otelflow.tasks.failed"]) == (3, 2)
    parse = spans["block parse"]
    assert (parse.status_code, parse.status_message) == (ERROR, "2 of 2 tasks failed")
    assert spans["block load"].status_code == UNSET
    assert spans["workflow clean"].status_code == UNSET


def test_a_scope_whose_body_raised_is_error_with_the_exception(tmp_path, receiver):
    tel = start(tmp_path, receiver)
    with pytest.raises(KeyError), otelflow.workflow_scope("broken"):
        raise KeyError("x")
    tel.stop()
    spans = {sp.name: sp for sp in receiver.spans()}
    wf = spans["workflow broken"]
    assert wf.status_code == ERROR and wf.status_message == "KeyError"
    assert wf.attributes["error.type"] == "KeyError"


def test_the_w3c_trace_id_is_what_every_view_shows(tmp_path, receiver, capsys):
    tel = start(tmp_path, receiver, console=True)
    workload(fail=1, ok=1)
    summary = tel.stop()
    assert isinstance(tel.trace_id, str) and re.fullmatch(r"[0-9a-f]{32}", tel.trace_id)
    assert int(tel.trace_id, 16) == tel.trace_id_int
    assert {sp.trace_id for sp in receiver.spans()} == {tel.trace_id}
    assert summary["trace_id"] == tel.trace_id
    assert json.loads((Path(tel.run_dir) / "run.json").read_text())["trace_id"] == tel.trace_id
    assert f"trace {tel.trace_id}" in capsys.readouterr().err.splitlines()[0]
    report = build_report(open_run(tel.run_dir))
    assert report["run"]["trace_id"] == tel.trace_id
    assert f"trace id {tel.trace_id}" in format_report(report).splitlines()[2]
