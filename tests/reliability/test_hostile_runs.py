"""report/compare/plot on hostile run directories: nothing hangs, crashes, lies, or writes
outside where it was told (issue 18, found items 10 and 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from otelflow.analysis import open_run
from otelflow.analysis.report import build_report, format_report
from tests.reliability.conftest import child_env
from tests.unit.analysis import synthetic


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otelflow", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,  # a hang fails the test instead of blocking the suite
        env=child_env(),
        cwd=cwd,
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return synthetic.write_run(tmp_path / "runs")


def _tasks(run_dir: Path) -> int:
    return len(open_run(run_dir).tasks())


def test_a_fifo_named_jsonl_is_skipped_not_waited_on(run_dir):
    n = _tasks(run_dir)
    os.mkfifo(run_dir / "evil.jsonl")
    run = open_run(run_dir)
    assert len(run.tasks()) == n
    assert any("evil.jsonl is a FIFO" in note for note in run.notes)
    res = _cli("report", str(run_dir))
    assert res.returncode == 0, res.stderr
    assert "evil.jsonl is a FIFO, not a regular file; skipped" in res.stdout
    assert _cli("compare", str(run_dir), str(run_dir)).returncode == 0


def test_a_fifo_named_run_json_is_not_waited_on(run_dir):
    (run_dir / "run.json").unlink()
    os.mkfifo(run_dir / "run.json")
    run = open_run(run_dir)
    assert run.status == "unknown"
    assert _cli("report", str(run_dir)).returncode == 0


@pytest.mark.parametrize("content", [b"\x00\xff\xfe garbage", b"[1, 2]", b"null", b'{"status": 5, "start_time": "x"}'])
def test_a_corrupt_run_json_is_a_note_and_the_lines_are_still_read(run_dir, content):
    n = _tasks(run_dir)
    (run_dir / "run.json").write_bytes(content)
    run = open_run(run_dir)
    assert len(run.tasks()) == n
    text = format_report(build_report(run))
    if content.startswith(b"{"):
        assert run.status == "unknown" and run.start_time is None
    else:
        assert "note: " in text and "run.json" in text and "read without its metadata" in text
    assert _cli("runs", str(run_dir.parent)).returncode == 0


def test_unreadable_jsonl_entries_are_reported_not_counted_as_an_empty_run(run_dir):
    (run_dir / "dir.jsonl").mkdir()
    (run_dir / "loop.jsonl").symlink_to(run_dir / "loop.jsonl")
    run = open_run(run_dir)
    notes = " | ".join(run.notes)
    assert "dir.jsonl is a directory" in notes
    assert "loop.jsonl cannot be read" in notes
    res = _cli("report", str(run_dir))
    assert res.returncode == 0 and "dir.jsonl is a directory" in res.stdout


def test_only_unreadable_files_does_not_claim_a_completed_empty_run(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    os.mkfifo(d / "main.jsonl")
    res = _cli("report", str(d))
    assert res.returncode == 0
    assert "main.jsonl is a FIFO" in res.stdout


def test_lines_with_wrong_field_types_are_skipped_and_counted(run_dir):
    n = _tasks(run_dir)
    bad = [
        {"section": "event", "type": "TaskCreated", "task_id": 5, "event_time": 1},
        {"section": "event", "type": "TaskStarted", "task_id": "x", "event_time": "soon"},
        {"section": "event", "type": "TaskCreated", "task_id": "y", "event_time": 2, "attributes": "str"},
        {"section": "event", "type": "TaskCreated", "task_id": "z", "event_time": 2, "depends_on": [[1]]},
        {"section": "span", "kind": "task", "name": ["x"], "start_time": 1, "end_time": 2},
        {"section": "event", "type": "TaskCompleted", "task_id": "w", "event_time": True},
    ]
    f = next(run_dir.glob("*.jsonl"))
    with f.open("ab") as fh:
        for line in bad:
            fh.write(json.dumps(line).encode() + b"\n")
    run = open_run(run_dir)
    assert len(run.tasks()) == n
    assert run.bad_lines == len(bad)
    res = _cli("report", str(run_dir))
    assert res.returncode == 0, res.stderr
    assert f"{len(bad)} undecodable line(s) skipped" in res.stdout


def test_binary_garbage_is_a_bad_line_not_a_kill(tmp_path):
    run_dir = synthetic.write_run(tmp_path / "runs", torn=False)
    f = next(run_dir.glob("*.jsonl"))
    with f.open("ab") as fh:
        fh.write(os.urandom(64).replace(b"\n", b"") + b"\xff\x00")
    run = open_run(run_dir)
    assert run.torn_lines == 0
    list(run.lines())
    assert run.bad_lines == 1
    assert "killed" not in format_report(build_report(run))


def test_a_torn_last_line_is_still_recognised(tmp_path):
    run_dir = synthetic.write_run(tmp_path / "runs", torn=False)
    f = next(run_dir.glob("*.jsonl"))
    with f.open("ab") as fh:
        fh.write(b'{"section":"event","type":"TaskCreated","task_id":"cut","ev')
    run = open_run(run_dir)
    assert run.torn_lines == 1
    list(run.lines())
    assert run.bad_lines == 0


def test_plot_without_output_never_writes_outside_the_current_directory(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    meta = json.loads((run_dir / "run.json").read_text())
    meta["run_id"] = "../../escaped/x"
    (run_dir / "run.json").write_text(json.dumps(meta))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = set(tmp_path.rglob("*"))
    res = _cli("plot", str(run_dir), cwd=cwd)
    assert res.returncode == 0, res.stderr
    created = set(tmp_path.rglob("*")) - before
    assert created and all(p.parent == cwd for p in created), created
    assert not (tmp_path.parent / "escaped").exists()
