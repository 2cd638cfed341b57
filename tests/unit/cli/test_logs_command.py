"""``otelflow logs``: records of every process merged in time order, filters, --json, errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import otelflow
from otelflow.cli.main import main
from otelflow.logs import LogCapture


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("otelflow: error: ")
    return lines[0]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run with a main file and a second process's file, their records interleaved in time."""
    log = logging.getLogger("etl")
    log.setLevel(logging.DEBUG)
    main_tel = otelflow.Telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={}).start()
    worker = otelflow.Telemetry(
        role="worker", checkpoint_path=str(tmp_path), run_id=main_tel.run_id, resource_poll_interval=0,
        environ={}, trace_id=main_tel.trace_id, session_id=main_tel.session_id,
        session_span_id=main_tel.session_span_id,
    ).start()
    cfg = LogCapture(("etl",), logging.DEBUG)

    @otelflow.task(name="load")
    def load(i: int) -> None:
        log.info("loaded part %d", i, extra={"etl.part": i, "etl.ok": i != 2})

    with otelflow.workflow_scope("nightly"):
        for i in range(4):
            # alternate which process's file the record goes to
            handle = cfg.apply(main_tel if i % 2 == 0 else worker)
            load(i)
            handle.undo()
    handle = cfg.apply(main_tel)
    log.warning("all done")
    log.debug("debug detail")
    handle.undo()
    worker.stop()
    main_tel.stop()
    assert main_tel.run_dir is not None
    assert len(list(main_tel.run_dir.glob("*.jsonl"))) == 2
    logging.getLogger("etl").setLevel(logging.NOTSET)
    return main_tel.run_dir


def test_records_of_both_processes_come_merged_in_time_order(run, capsys):
    assert main(["logs", str(run), "--json"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["message"] for r in recs] == [
        "loaded part 0", "loaded part 1", "loaded part 2", "loaded part 3", "all done", "debug detail"
    ]
    times = [r["event_time"] for r in recs]
    assert times == sorted(times)
    assert len({r["process"] for r in recs}) == 1  # one OS process, but two files:
    assert all(r.get("task_id") for r in recs[:4])


def test_filters(run, capsys):
    assert main(["logs", str(run), "--json", "--where", "etl.part=2"]) == 0
    (rec,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rec["message"] == "loaded part 2" and rec["attributes"]["etl.ok"] is False
    task = rec["task_id"]
    assert main(["logs", str(run), "--json", "--task", task]) == 0
    assert [json.loads(x)["message"] for x in capsys.readouterr().out.splitlines()] == ["loaded part 2"]
    assert main(["logs", str(run), "--json", "--level", "warning"]) == 0
    assert [json.loads(x)["message"] for x in capsys.readouterr().out.splitlines()] == ["all done"]
    assert main(["logs", str(run), "--json", "--grep", "PART 3"]) == 0
    assert [json.loads(x)["message"] for x in capsys.readouterr().out.splitlines()] == ["loaded part 3"]
    assert main(["logs", str(run), "--json", "--workflow", "nightly", "--where", "etl.ok=false"]) == 0
    assert [json.loads(x)["message"] for x in capsys.readouterr().out.splitlines()] == ["loaded part 2"]
    assert main(["logs", str(run), "--json", "--logger", "etl"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6


def test_text_output_names_ids_and_extras(run, capsys):
    assert main(["logs", str(run), "--where", "etl.part=1"]) == 0
    out = capsys.readouterr().out
    assert "INFO" in out and "etl" in out and "loaded part 1" in out and "etl.part=1" in out
    assert "task=" in out and "workflow=" in out


@pytest.mark.parametrize(("argv", "words"), [
    (["--where", "etl.nope=1"], "has the field 'etl.nope'; fields there:"),
    (["--where", "etl.part=9"], "has etl.part=9; its values there: 0, 1, 2, 3"),
    (["--where", "broken"], "--where 'broken' is not KEY=VALUE"),
    (["--level", "LOUD"], "--level 'LOUD' is not a log level"),
    (["--task", "t-missing"], "has no task 't-missing'"),
    (["--logger", "nope"], "is from logger 'nope'; loggers there: etl"),
])
def test_a_wrong_key_or_value_says_so_in_one_line(run, capsys, argv, words):
    assert main(["logs", str(run), *argv]) == 2
    assert words in _one_error_line(capsys.readouterr().err)
