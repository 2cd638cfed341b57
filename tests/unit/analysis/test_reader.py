"""Reading a run directory: finding it, merging files in time order, torn and bad lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import ModuleType

import pytest

from otelflow.analysis.reader import Run, RunNotFoundError, default_runs_dir, list_runs, open_run
from otelflow.errors import OtelflowError


def test_open_run_accepts_a_run_dir_its_files_and_a_runs_dir(run_dir: Path, runs_dir: Path) -> None:
    assert open_run(run_dir).path == run_dir
    assert open_run(run_dir / "run.json").path == run_dir
    assert open_run(run_dir / "main-host-100.jsonl").path == run_dir
    assert open_run(runs_dir).path == run_dir


def test_open_run_picks_the_latest_run_by_start_time(runs_dir: Path, synthetic: ModuleType) -> None:
    synthetic.write_run(runs_dir, "zz-old", start_offset=-100)
    newest = synthetic.write_run(runs_dir, "aa-new", start_offset=100)
    synthetic.write_run(runs_dir, "mm-mid", start_offset=0)
    assert open_run(runs_dir).path == newest
    assert [r.run_id for r in list_runs(runs_dir)] == ["zz-old", "mm-mid", "aa-new"]


def test_open_run_by_id_and_unique_prefix_in_the_runs_dir(runs_dir: Path, synthetic: ModuleType) -> None:
    synthetic.write_run(runs_dir, "20240101-aaa")
    b = synthetic.write_run(runs_dir, "20240101-bbb", start_offset=1)
    assert open_run("20240101-bbb", runs_dir=runs_dir).path == b
    assert open_run("20240101-b", runs_dir=runs_dir).path == b
    with pytest.raises(RunNotFoundError, match="ambiguous"):
        open_run("20240101", runs_dir=runs_dir)


def test_default_runs_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, run_dir: Path, runs_dir: Path
) -> None:
    monkeypatch.setenv("OTELFLOW_RUNS_DIR", str(runs_dir))
    assert default_runs_dir() == runs_dir
    assert open_run().path == run_dir
    monkeypatch.delenv("OTELFLOW_RUNS_DIR")
    assert default_runs_dir() == Path(".otelflow/runs")


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_open_run_says_what_it_expected(tmp_path: Path, make: str) -> None:
    target = tmp_path / "nothing"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("hello")
    with pytest.raises(RunNotFoundError) as info:
        open_run(target, runs_dir=tmp_path / "no-runs")
    assert isinstance(info.value, OtelflowError)
    assert isinstance(info.value, FileNotFoundError)
    assert "expected" in str(info.value)
    assert str(target) in str(info.value)


def test_list_runs_on_a_missing_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match="No runs directory"):
        list_runs(tmp_path / "missing")


def test_metadata(run_dir: Path, synthetic: ModuleType) -> None:
    run = open_run(run_dir)
    assert run.run_id == "run-a"
    assert run.service_name == "synthetic"
    assert run.trace_id == synthetic.TRACE_ID
    assert run.status == "completed"
    assert run.start_time == synthetic.ns(0)
    assert run.end_time == synthetic.ns(20)
    assert [f.name for f in run.files] == ["main-host-100.jsonl", "worker-host-200.jsonl"]


def test_missing_run_json_is_tolerated(run_dir: Path) -> None:
    (run_dir / "run.json").unlink()
    run = open_run(run_dir)
    assert run.meta == {}
    assert run.run_id == "run-a"  # the directory name
    assert run.status == "unknown"
    assert run.service_name == "unknown_service"
    assert sum(1 for _ in run.events()) > 0


def test_partial_run_json_is_tolerated_with_a_warning(run_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    (run_dir / "run.json").write_text('{"run_id": "run-a", "start_ti')
    with caplog.at_level(logging.WARNING, logger="otelflow.analysis"):
        run = open_run(run_dir)
    assert run.meta == {}
    assert "run.json is not valid JSON" in caplog.text


def test_events_from_all_files_are_merged_in_event_time_order(run_dir: Path) -> None:
    run = open_run(run_dir)
    events = list(run.events())
    times = [e["event_time"] for e in events]
    assert times == sorted(times)
    # Both files contribute, interleaved: a worker's TaskStarted sits between main's events.
    started = [e for e in events if e["type"] == "TaskStarted"]
    assert [e["task_id"] for e in started] == ["a2", "a1", "a3", "a4", "b1", "b2", "b3"]
    i = events.index(started[0])
    assert (events[i - 1]["type"], events[i - 1]["task_id"]) == ("TaskCreated", "a3")  # main, 0 s
    assert (events[i + 1]["type"], events[i + 1]["task_id"]) == ("TaskCreated", "a4")  # main, 1 s
    assert events[i + 2]["type"] == "TaskStarted"  # worker, 1 s: equal times keep file order
    assert run.out_of_order == 0


def test_unordered_iteration_is_file_order(run_dir: Path) -> None:
    run = open_run(run_dir)
    started = [e["task_id"] for e in run.events("TaskStarted", ordered=False)]
    assert started == ["a1", "a2", "a3", "a4", "b1", "b2", "b3"]  # as written, a1 before a2


def test_lines_later_than_the_reorder_window_are_counted(run_dir: Path) -> None:
    run = open_run(run_dir, reorder_window=1)
    started = [e["task_id"] for e in run.events("TaskStarted")]
    assert started == ["a2", "a1", "a3", "a4", "b1", "b2", "b3"]  # a window of 1 still fixes a swap
    run = Run(run_dir, reorder_window=1)
    path = run_dir / "worker-host-200.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[2] + lines[3] + lines[0] + lines[1] + "".join(lines[4:]))
    list(run.events())
    assert run.out_of_order > 0


def test_filters(run_dir: Path) -> None:
    run = open_run(run_dir)
    assert {e["type"] for e in run.events({"TaskFailed", "ml.Checkpoint"})} == {"TaskFailed", "ml.Checkpoint"}
    task_spans = list(run.spans("task"))
    assert len(task_spans) == 7
    starts = [s["start_time"] for s in task_spans]
    assert starts == sorted(starts)
    assert {s["kind"] for s in run.spans()} == {"task", "block", "workflow", "session"}
    assert [m["name"] for m in run.metrics()] == ["otelflow.tasks.completed"]
    assert list(run.metrics("nope")) == []
    sections = [line["section"] for line in run.lines()]
    assert set(sections) == {"event", "span", "metric"}
    assert len(list(run.lines({"span"}))) == 11


def test_torn_last_line_is_skipped_and_counted(run_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otelflow.analysis"):
        run = open_run(run_dir)
        lines = list(run.lines())
    assert run.torn_lines == 1
    assert run.bad_lines == 0
    assert not any(line.get("type") == "TaskCompl" for line in lines)
    assert "undecodable" not in caplog.text  # a torn tail is expected, not warned about


def test_a_complete_last_line_without_newline_is_kept(run_dir: Path) -> None:
    path = run_dir / "main-host-100.jsonl"
    path.write_text(path.read_text().rstrip("\n"))
    run = open_run(run_dir)
    assert run.torn_lines == 2  # unterminated, so counted as torn…
    assert [m["name"] for m in run.metrics()] == ["otelflow.tasks.completed"]  # …but still read


def test_undecodable_lines_are_skipped_counted_and_warned_once(run_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = run_dir / "main-host-100.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(3, "this is not json\n")
    lines.insert(6, "[1, 2, 3]\n")
    path.write_text("".join(lines))
    with caplog.at_level(logging.WARNING, logger="otelflow.analysis"):
        run = open_run(run_dir)
        n = sum(1 for _ in run.lines())
        again = sum(1 for _ in run.lines())
    assert n == again
    assert run.bad_lines == 2  # counted once per file, however often it is read
    assert run.torn_lines == 1
    warnings = [r for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(warnings) == 1
    assert "main-host-100.jsonl" in warnings[0].getMessage()


def test_blank_lines_are_ignored(run_dir: Path) -> None:
    path = run_dir / "main-host-100.jsonl"
    path.write_text("\n" + path.read_text() + "\n")
    run = open_run(run_dir)
    list(run.lines())
    assert run.bad_lines == 0


def test_a_run_without_run_json_still_lists(tmp_path: Path, synthetic: ModuleType) -> None:
    d = synthetic.write_run(tmp_path, "r1")
    (d / "run.json").unlink()
    [info] = list_runs(tmp_path)
    assert info.run_id == "r1"
    assert info.status == "unknown"
    assert info.end_time is None


def test_repr_and_tasks(run_dir: Path) -> None:
    run = open_run(run_dir)
    assert "run-a" in repr(run)
    tasks = run.tasks()
    assert tasks is run.tasks()  # cached
    assert json.dumps(tasks["a4"].to_dict())
