"""Edge cases of reading a RHAPSODY TAL checkpoint (the real one is read in tests/integration)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from otelflow.analysis import open_run
from otelflow.analysis.tal import Translator, is_tal_file


def _ev(event_type: str, t: float, **kw: Any) -> dict[str, Any]:
    return {
        "event_id": "x",
        "event_type": event_type,
        "event_time": t,
        "emit_time": t,
        "session_id": "asyncflow.session.1",
        "backend": "concurrent",
        "task_id": None,
        "node_id": None,
        "attributes": {},
        "name": event_type,
        "section": "event",
        **kw,
    }


def _write(path: Path, lines: list[dict[str, Any]], torn: str = "") -> Path:
    path.write_text("".join(json.dumps(ln) + "\n" for ln in lines) + torn)
    return path


def test_an_otelflow_run_file_is_not_a_tal_checkpoint(tmp_path: Path) -> None:
    f = _write(tmp_path / "main-host-1.jsonl", [{"section": "event", "type": "SessionStarted", "event_time": 1}])
    assert not is_tal_file(f)
    assert not is_tal_file(tmp_path / "missing.jsonl")


def test_a_killed_tal_run_is_read_up_to_its_torn_last_line(tmp_path: Path) -> None:
    attrs = {"executable": "a", "task_type": "function", "asyncflow.workflow_id": "wf-1", "depends_on": []}
    f = _write(
        tmp_path / "asyncflow.session.1.100.telemetry.jsonl",
        [
            _ev("SessionStarted", 100.0),
            _ev("TaskCreated", 100.5, task_id="task.000001", attributes=attrs),
            _ev("TaskStarted", 101.0, task_id="task.000001", attributes=attrs),
        ],
        torn='{"event_type": "TaskCompl',
    )
    run = open_run(f)
    assert run.torn_lines == 1 and run.bad_lines == 0
    (task,) = run.data.tasks.values()
    assert (task.task_id, task.name, task.workflow_id, task.state) == ("task.000001", "a", "wf-1", "running")
    assert task.created == 100_500_000_000


def test_gpu_samples_and_user_events_keep_their_meaning(tmp_path: Path) -> None:
    tr = Translator()
    (gpu,) = tr(_ev("ResourceUpdate", 5.0, node_id="n1", gpu_id=0, gpu_percent=50.0, resource_scope="per_gpu"))
    assert (gpu["scope"], gpu["device"], gpu["gpu_utilization"], gpu["node"]) == ("gpu", "0", 0.5, "n1")
    (user,) = tr(_ev("asyncflow.DataQualityChecked", 6.0, score=0.97, rows_checked=10))
    assert (user["type"], user["score"], user["rows_checked"], user["event_time"]) == (
        "asyncflow.DataQualityChecked",
        0.97,
        10,
        6_000_000_000,
    )
    metrics = tr({"section": "metric", "checkpoint_time": 7.0, "tasks_completed": 3, "label": "x"})
    assert [(m["name"], m["points"][0]["value"]) for m in metrics] == [("rhapsody.tasks_completed", 3)]
    assert tr({"section": "what"}) == [] and tr({"section": "event"}) == []
