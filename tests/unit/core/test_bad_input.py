"""Bad input at run time is sanitized or rejected and counted, never raised; at definition
time it is a clear EventError/ConfigError (issue 18, found items 1-5)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import otelflow
from otelflow.analysis import open_run
from otelflow.errors import ConfigError, EventError
from tests.conftest import read_lines


def _start(tmp_path: Path) -> otelflow.Telemetry:
    return otelflow.start_telemetry(checkpoint_path=tmp_path / "runs", resource_poll_interval=0, environ={})


def _report(run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otelflow", "report", str(run_dir)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- item 1: non-string task names --------------------------------------------------------------


def test_a_non_string_task_name_is_recorded_as_text_and_counted(tmp_path):
    tel = _start(tmp_path)
    tr = otelflow.tracker("x")
    tid = tr.created(None, 123)
    tr.started(tid)
    tr.completed(tid)
    tr.created("n", None)
    summary = tel.stop()
    assert summary["dropped"]["invalid_arguments"] == 1  # None is "no name": the default, not counted
    assert summary["tasks"]["completed"] == 1
    meta = json.loads((tel.run_dir / "run.json").read_text())
    assert meta["status"] == "completed"
    spans = [s for s in read_lines(tel.run_dir, "span") if s.get("kind") == "task"]
    assert {s["name"] for s in spans} == {"123", "task"}
    assert _report(tel.run_dir).returncode == 0


def test_task_decorator_with_a_non_string_name_is_a_config_error():
    with pytest.raises(ConfigError, match="non-empty string"):
        otelflow.task(name=123)  # type: ignore[call-overload]


# -- item 2: unhashable ids ---------------------------------------------------------------------


def test_unhashable_task_ids_never_raise_and_keep_the_lifecycle_together(tmp_path):
    tel = _start(tmp_path)
    tr = otelflow.tracker("x")
    tid = tr.created([1], "a")  # type: ignore[arg-type]
    assert tid == "[1]"
    tr.started({"k": 1})  # type: ignore[arg-type]
    tr.started([1])  # type: ignore[arg-type]
    tr.completed([1])  # type: ignore[arg-type]
    tr.failed([2], ValueError("x"))  # type: ignore[arg-type]
    tr.created("d", "a", depends_on=[[1], {2}])  # type: ignore[list-item]
    summary = tel.stop()
    assert summary["tasks"]["completed"] == 1
    assert summary["dropped"]["invalid_arguments"] >= 4
    assert summary["dropped"]["internal_errors"] == 0
    run = open_run(tel.run_dir)
    assert run.tasks()["[1]"].status == "completed"


# -- item 3: wrong-type attributes, cpu_time_s, event_time, user event values ----------------


def test_string_attributes_are_counted_and_the_report_still_reads_the_run(tmp_path):
    tel = _start(tmp_path)
    tr = otelflow.tracker("x")
    t = tr.created("a", "n", attributes="str")  # type: ignore[arg-type]
    tr.started(t)
    tr.completed(t)
    t2 = tr.created("b", "n", attributes={"ok": 1, "bad": object(), 3: "k", "nan": math.nan})
    tr.completed(t2)
    summary = tel.stop()
    assert summary["dropped"]["invalid_arguments"] == 2
    res = _report(tel.run_dir)
    assert res.returncode == 0, res.stderr
    assert "2 completed" in res.stdout
    created = {e["task_id"]: e for e in read_lines(tel.run_dir, "event") if e["type"] == "TaskCreated"}
    assert "attributes" not in created["a"]
    attrs = created["b"]["attributes"]
    assert attrs["ok"] == 1 and attrs["3"] == "k" and attrs["nan"] == "nan" and attrs["bad"].startswith("<object")


def test_a_string_cpu_time_drops_the_figure_not_the_completion(tmp_path):
    tel = _start(tmp_path)
    tr = otelflow.tracker("x")
    t = tr.created("a", "n")
    tr.started(t)
    tr.completed(t, cpu_time_s="0.5", peak_rss_bytes=-3)  # type: ignore[arg-type]
    tr.created("b", "n")
    tr.started("b")
    tr.completed("b", cpu_time_s=math.inf)
    summary = tel.stop()
    assert summary["dropped"]["invalid_arguments"] == 3
    assert summary["dropped"]["internal_errors"] == 0
    tasks = open_run(tel.run_dir).tasks()
    assert tasks["a"].status == tasks["b"].status == "completed"
    spans = [s for s in read_lines(tel.run_dir, "span") if s.get("kind") == "task"]
    assert len(spans) == 2


def test_an_implausible_event_time_is_replaced_by_now(tmp_path):
    tel = _start(tmp_path)
    tr = otelflow.tracker("x")
    t = tr.created("a", "n", event_time=-1)
    tr.started(t, event_time=1.5)  # type: ignore[arg-type]
    tr.completed(t, event_time="later")  # type: ignore[arg-type]
    summary = tel.stop()
    assert summary["dropped"]["invalid_arguments"] == 3
    info = open_run(tel.run_dir).tasks()["a"]
    assert info.status == "completed"
    assert summary["elapsed_s"] > 0
    for e in read_lines(tel.run_dir, "event"):
        assert e["event_time"] >= tel.start_time


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ({"epoch": "notint"}, "Expected `int`"),
        ({"epoch": 1, "tag": {"a"}}, "Expected `str`"),
        ({"epoch": 1, "tag": b"xx"}, "Expected `str`"),
        ({"epoch": 1, "loss": math.nan}, "cannot be stored in JSON"),
        ({"epoch": 1, "loss": math.inf}, "cannot be stored in JSON"),
    ],
)
def test_user_event_values_of_the_wrong_type_are_rejected_and_counted(tmp_path, caplog, values, why):
    ev = otelflow.define_event("bad.Checkpoint", epoch=int, loss=(float, 0.0), tag=(str, ""))
    tel = _start(tmp_path)
    assert otelflow.emit("bad.Checkpoint", **values) is False
    assert otelflow.emit(ev(**values)) is False
    assert otelflow.emit("bad.Checkpoint", epoch=2) is True
    summary = tel.stop()
    assert summary["dropped"]["invalid_emits"] == 2
    assert why in caplog.text
    lines = [e for e in read_lines(tel.run_dir, "event") if e["type"] == "bad.Checkpoint"]
    assert [e["epoch"] for e in lines] == [2]


# -- item 4: define_event validation ------------------------------------------------------------


@pytest.mark.parametrize("field", ["type", "section", "trace_id", "span_id"])
def test_define_event_refuses_fields_that_collide_with_line_keys(field):
    with pytest.raises(EventError, match="reserved"):
        otelflow.define_event("coll.Ev", **{field: int})


def test_define_event_refuses_a_name_with_a_trailing_newline():
    with pytest.raises(EventError, match="not valid"):
        otelflow.define_event("ns.Name\n", x=int)
    with pytest.raises(EventError):
        otelflow.define_event("ns.Name", **{"x\n": int})


def test_a_mutable_default_is_copied_per_event(tmp_path):
    ev = otelflow.define_event("mut.Ev", tags=(dict[str, int], {"a": 1}), items=(list[int], [1, 2]))
    a, b = ev(), ev()
    assert a.tags == {"a": 1} and a.items == [1, 2]
    assert a.tags is not b.tags


@pytest.mark.parametrize(
    "spec",
    [(int, "1"), (float, math.nan), (str, "\ud800"), (list[int], ["x"]), (object, None)],
)
def test_define_event_refuses_bad_defaults_and_types_with_an_event_error(spec):
    with pytest.raises(EventError):
        otelflow.define_event("badspec.Ev", x=spec)


# -- item 5: deep nesting, lone surrogates ---------------------------------------------------


def test_deep_nesting_and_lone_surrogates_never_reach_the_file_or_raise(tmp_path):
    otelflow.define_event("deep.Ev", payload=list, text=(str, ""))
    tel = _start(tmp_path)
    deep: list[object] = []
    cur = deep
    for _ in range(5000):
        nxt: list[object] = []
        cur.append(nxt)
        cur = nxt
    assert otelflow.emit("deep.Ev", payload=deep) is False
    assert otelflow.emit("deep.Ev", payload=[], text="\ud800") is False
    tr = otelflow.tracker("x")
    t = tr.created("\udc80id", "\ud800name", attributes={"k": "\ud800"})
    tr.started(t)
    tr.failed(t, ValueError("bad \udcff byte"))
    summary = tel.stop()
    assert summary["dropped"]["internal_errors"] == 0
    assert summary["dropped"]["invalid_emits"] == 2
    assert summary["tasks"]["failed"] == 1
    raw = b"".join(f.read_bytes() for f in tel.run_dir.glob("*.jsonl"))
    raw.decode("utf-8")  # strict: every line is valid UTF-8
    failed = [e for e in read_lines(tel.run_dir, "event") if e["type"] == "TaskFailed"]
    assert failed[0]["task_id"] == "\ufffdid" and "\ufffd" in failed[0]["error_message"]


def test_the_writer_never_loses_a_line_to_an_unencodable_builtin_event(tmp_path):
    from otelflow.events.model import TaskCreated
    from otelflow.sinks.jsonl import JsonlWriter

    w = JsonlWriter(tmp_path / "x.jsonl")
    deep: dict[str, object] = {}
    cur = deep
    for _ in range(3000):
        cur["k"] = {}
        cur = cur["k"]  # type: ignore[assignment]
    w.write_event(TaskCreated(task_id="\ud800", attributes=deep), b'{"section":"event"')  # type: ignore[arg-type]
    w.write_event(TaskCreated(task_id="ok"), b'{"section":"event"')
    w.close()
    lines = [json.loads(x) for x in (tmp_path / "x.jsonl").read_bytes().splitlines()]
    assert [x["task_id"] for x in lines] == ["\ufffd", "ok"]
    assert w.sanitized == 1 and w.lines_lost == 0
