"""Academy actions recorded through OtelflowLogConfig: two agents in their own processes."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import re
import signal
import socket
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("academy")

from academy.exchange.cloud.client import spawn_http_exchange
from academy.logging.configs.file import FileLogging
from academy.logging.configs.multi import MultiLogging
from academy.manager import Manager

import otelflow
from otelflow.analysis.reader import open_run
from otelflow.analysis.report import build_report
from otelflow.integrations.academy import OtelflowLogConfig

sys.path.insert(0, str(Path(__file__).parent))
import academy_agents as agents

TOL = 0.03
N = 4  # fib(4): three add calls


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run(log_config: Any) -> dict[str, Any]:
    import psutil

    out: dict[str, Any] = {}
    spawn = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(2, mp_context=spawn)
    me = psutil.Process()
    try:
        with spawn_http_exchange("127.0.0.1", _free_port()) as factory:
            async with await Manager.from_exchange_factory(factory, executors=pool, log_config=log_config) as manager:
                adder = await manager.launch(agents.Adder)
                coordinator = await manager.launch(agents.Coordinator, args=(adder,))
                with otelflow.workflow_scope("fib", workflow_id="wf-fib"):
                    out["fib"] = await coordinator.fib(N)
                    with pytest.raises(ValueError, match="adder refuses"):
                        await adder.fail()
                await manager.shutdown(coordinator, blocking=True)
                await manager.shutdown(adder, blocking=True)
    finally:
        children = me.children(recursive=True)
        pool.shutdown(wait=True, cancel_futures=True)
        for proc in children:  # agent processes or an exchange left behind
            if proc.is_running() and not _is_resource_tracker(proc):
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    return out


def _is_resource_tracker(proc: Any) -> bool:
    """multiprocessing's own helper: it exits with this process; killing it only makes it restart."""
    try:
        return any("resource_tracker" in part for part in proc.cmdline())
    except Exception:  # gone already
        return True


def _lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for f in sorted(run_dir.glob("*.jsonl")) for line in f.read_text().splitlines()]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("academy")
    with otelflow.start_telemetry(checkpoint_path=str(tmp / "telemetry"), resource_poll_interval=0) as tel:
        out = asyncio.run(_run(OtelflowLogConfig()))
    lines = _lines(tel.run_dir)
    out["run_dir"] = tel.run_dir
    out["spans"] = [r for r in lines if r.get("section") == "span"]
    out["logs"] = [r for r in lines if r.get("section") == "log"]
    out["tasks"] = [s for s in out["spans"] if s["kind"] == "task"]
    return out


def _by_name(rec: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [s for s in rec["tasks"] if s["name"] == name]


def test_every_action_is_one_task(recorded: dict[str, Any]) -> None:
    assert recorded["fib"] == 3
    assert len(_by_name(recorded, "fib")) == 1
    assert len(_by_name(recorded, "add")) == N - 1
    assert len(_by_name(recorded, "fail")) == 1
    tags = [s["attributes"]["academy.message_tag"] for s in recorded["tasks"]]
    assert len(set(tags)) == len(tags) == N + 1


def test_agent_side_execution_time_matches_the_sleep(recorded: dict[str, Any]) -> None:
    main_pid = os.getpid()
    for span in _by_name(recorded, "add"):
        attrs = span["attributes"]
        # The sleep sets the floor; the ceiling leaves a loaded machine a second of stalls.
        assert agents.SLEEP - TOL <= attrs["otelflow.phase.execution_s"] < agents.SLEEP + 1.0
        assert int(attrs["otelflow.task.worker"].rsplit(":", 1)[1]) != main_pid  # measured in the agent
        ev = dict(span["events"])
        # created → sent → started at the agent → response, in order, phases adding up.
        assert ev["TaskCreated"] <= ev["TaskSubmitted"] <= ev["TaskStarted"] <= ev["TaskCompleted"]
        total = sum(attrs[f"otelflow.phase.{p}_s"] for p in ("send", "queue", "execution", "response"))
        assert abs(total - (ev["TaskCompleted"] - ev["TaskCreated"]) / 1e9) < 1e-5


def test_actions_and_user_spans_are_parented(recorded: dict[str, Any]) -> None:
    spans = recorded["spans"]
    wf = next(s for s in spans if s["kind"] == "workflow" and s["name"] == "workflow fib")
    fib = _by_name(recorded, "fib")[0]
    assert fib["parent_span_id"] == wf["span_id"]
    assert fib["attributes"]["otelflow.workflow.id"] == "wf-fib"
    adds = _by_name(recorded, "add")
    assert {s["parent_span_id"] for s in adds} == {fib["span_id"]}  # called from inside fib
    user = [s for s in spans if s["name"] == "add.sleep"]
    assert sorted(s["parent_span_id"] for s in user) == sorted(s["span_id"] for s in adds)
    blocks = sorted(s["name"] for s in spans if s["kind"] == "block")
    assert blocks == ["block agent Adder", "block agent Coordinator"]


def test_failed_action_carries_the_agents_error(recorded: dict[str, Any]) -> None:
    fail = _by_name(recorded, "fail")[0]
    assert fail["status"] == "failed"
    assert fail["attributes"]["error.type"] == "ValueError"
    assert "adder refuses" in fail["error_message"]


def test_logs_inside_actions_join_the_action_span(recorded: dict[str, Any]) -> None:
    adds = {s["span_id"] for s in _by_name(recorded, "add")}
    trace_id = _by_name(recorded, "add")[0]["trace_id"]
    logs = [r for r in recorded["logs"] if r.get("logger") == "academy_test"]
    assert len(logs) == N - 1
    assert {r["span_id"] for r in logs} == adds
    assert {r["trace_id"] for r in logs} == {trace_id}


def test_report_shows_where_the_time_went(recorded: dict[str, Any]) -> None:
    report = build_report(open_run(recorded["run_dir"]))
    phases = report["phases"]["add"]
    assert set(phases) == {"send", "queue", "execution", "response"}
    assert phases["execution"]["count"] == N - 1
    # The mean of what the spans recorded (whose bounds the test above checks): exact, where
    # a bound around the sleep is one a loaded machine's stalls can break.
    recorded_s = [s["attributes"]["otelflow.phase.execution_s"] for s in _by_name(recorded, "add")]
    assert phases["execution"]["mean"] == pytest.approx(sum(recorded_s) / len(recorded_s))
    assert phases["execution"]["mean"] >= agents.SLEEP - TOL


_NORMALIZE = [
    (re.compile(r"^\[[^\]]+\]\s*"), ""),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"\b[0-9a-f]{8}\b"), "<id>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
]


def _normalized(path: Path) -> Counter[str]:
    out: Counter[str] = Counter()
    for raw in path.read_text().splitlines():
        line = raw
        for rx, sub in _NORMALIZE:
            line = rx.sub(sub, line)
        out[line] += 1
    return out


def test_academy_log_file_unchanged_by_otelflow(tmp_path: Path) -> None:
    plain_log, with_log = tmp_path / "plain.log", tmp_path / "with.log"
    root = logging.getLogger()
    level = root.level
    try:
        asyncio.run(_run(FileLogging(logfile=plain_log, level=logging.INFO)))
        with otelflow.start_telemetry(checkpoint_path=str(tmp_path / "telemetry"), resource_poll_interval=0) as tel:
            cfg = MultiLogging([FileLogging(logfile=with_log, level=logging.INFO), OtelflowLogConfig()])
            asyncio.run(_run(cfg))
    finally:
        root.setLevel(level)
    plain, inst = _normalized(plain_log), _normalized(with_log)
    assert plain and set(inst) == set(plain)
    assert not [line for line in inst if "otelflow" in line]
    # ... and the actions were recorded meanwhile.
    assert any(r.get("name") == "add" for r in _lines(tel.run_dir) if r.get("section") == "span")


def test_the_config_visits_an_agent_process_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    with otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0):
        config = OtelflowLogConfig()
        before = agents.logging_state()
        config.init_logging()()  # the submitting process: nothing left behind either
        assert agents.logging_state() == before
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            seen = pool.submit(agents.visit_and_leave, config).result(timeout=60)
        config.close()
    assert seen == {"same_after": True, "changed_during": True, "own_handler_kept": True, "root_handlers_during": 1}
