"""Task spans now cover only the execution: every number a view derives stays the same.

``fixed_run_numbers.json`` was written by otelflow before the change (see
``fixed_run.py``); the same fixed run recorded today must give the same summary(),
report, critical path and per-task tables (new keys — the dispatch/queue split — may be
added, no existing number may change).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.unit.analysis import fixed_run

GOLDEN = Path(__file__).with_name("fixed_run_numbers.json")


def _contains(old: Any, new: Any, where: str = "") -> list[str]:
    """Where ``new`` lacks or changes a value of ``old`` (dicts may gain keys)."""
    if isinstance(old, dict):
        if not isinstance(new, dict):
            return [f"{where}: {new!r} is not a dict"]
        out: list[str] = []
        for k, v in old.items():
            if k not in new:
                out.append(f"{where}.{k}: missing")
            else:
                out += _contains(v, new[k], f"{where}.{k}")
        return out
    if isinstance(old, list):
        if not isinstance(new, list) or len(new) != len(old):
            return [f"{where}: {new!r} != {old!r}"]
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True)) for d in _contains(a, b, f"{where}[{i}]")]
    return [] if old == new else [f"{where}: {new!r} != {old!r}"]


def test_fixed_run_numbers_are_those_from_before_the_span_change(tmp_path: Path) -> None:
    golden = json.loads(GOLDEN.read_text())
    now = fixed_run.numbers(fixed_run.record(tmp_path / "runs"))
    assert _contains(golden, now) == []
    # The comparison is not empty: it holds the tasks and their times.
    assert set(golden["tasks"]) == {t[0] for t in fixed_run.TASKS}
    assert golden["tasks"]["t7"]["execution_s"] == 0.6


def test_task_span_lines_start_at_started_but_keep_every_time(tmp_path: Path) -> None:
    run_dir = fixed_run.record(tmp_path / "runs")
    spans = {}
    for f in run_dir.glob("*.jsonl"):
        for raw in f.read_bytes().splitlines():
            line = json.loads(raw)
            if line.get("section") == "span" and line.get("kind") == "task":
                spans[line["attributes"]["otelflow.task.id"]] = line
    ms = fixed_run.MS
    for tid, _name, _deps, created, _sub, _q, started, end, _outcome in fixed_run.TASKS:
        line = spans[tid]
        t0 = fixed_run.T0
        assert line["start_time"] == t0 + (started if started is not None else end) * ms, tid
        assert line["end_time"] == t0 + end * ms
        assert line["attributes"]["otelflow.task.created_time"] == t0 + created * ms
        assert line["attributes"]["otelflow.task.started"] is (started is not None)
        assert dict(line["events"])["TaskCreated"] == t0 + created * ms


def test_a_run_read_from_its_spans_alone_keeps_every_time(tmp_path: Path) -> None:
    """A run whose event lines are gone (spans only) still gives the same task times."""
    from otelflow.analysis import open_run

    run_dir = fixed_run.record(tmp_path / "runs")
    full = {tid: t.to_dict() for tid, t in open_run(run_dir).tasks().items()}
    for f in run_dir.glob("*.jsonl"):
        kept = [raw for raw in f.read_bytes().splitlines() if json.loads(raw).get("section") != "event"]
        f.write_bytes(b"\n".join(kept) + b"\n")
    spans_only = open_run(run_dir).tasks()
    for tid, t in full.items():
        for key in ("created", "resolved", "submitted", "queued", "started", "ended", "execution_s"):
            assert spans_only[tid].to_dict()[key] == t[key], (tid, key)
