"""Parsl apps recorded by otelflow.instrument(dfk): the real Parsl, ThreadPool and HTEX (2 workers)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

parsl = pytest.importorskip("parsl")

from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from parsl.config import Config  # noqa: E402
from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor  # noqa: E402
from parsl.providers import LocalProvider  # noqa: E402

import otelflow  # noqa: E402
from otelflow.integrations import parsl as otelflow_parsl  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import parsl_apps as apps  # noqa: E402

SLEEP = 0.2
TOL = 0.03


def _config(kind: str, run_dir: Path) -> Config:
    if kind == "threads":
        executor: Any = ThreadPoolExecutor(label="threads", max_threads=4)
    else:
        executor = HighThroughputExecutor(
            label="htex",
            address="127.0.0.1",
            max_workers_per_node=2,
            heartbeat_period=1,
            heartbeat_threshold=5,
            poll_period=10,
            encrypted=False,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
        )
    return Config(
        executors=[executor],
        run_dir=str(run_dir),
        retries=1,
        retry_handler=apps.retry_only_flaky,
        strategy_period=0.5,  # start the HTEX block now, not at the first 5 s strategy tick
    )


def _scenario(
    kind: str, tmp: Path, monkeypatch: pytest.MonkeyPatch, with_otelflow: bool, capture_logs: bool = False
) -> dict[str, Any]:
    """Diamond in a workflow, a failing app and its dependent, a retried app, a memoized
    second call, a join_app and a bash app; the DFK always shut down, leftovers killed."""
    import psutil

    venv_bin = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", venv_bin + os.pathsep + os.environ.get("PATH", ""))
    paths = [str(Path(__file__).parent), os.getcwd(), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    reader = InMemoryMetricReader()
    out: dict[str, Any] = {}
    tel = None
    if with_otelflow:
        tel = otelflow.start_telemetry(
            checkpoint_path=str(tmp / "telemetry"), resource_poll_interval=0, metric_readers=[reader]
        )
    dfk = parsl.load(_config(kind, tmp / "runinfo"))
    me = psutil.Process()
    try:
        if with_otelflow:
            if capture_logs:
                otelflow_parsl.instrument(dfk, capture_logs=True)
            else:
                assert otelflow.instrument(dfk) is dfk
            otelflow.instrument(dfk)  # a second call changes nothing
        os.chdir(tmp)  # bash app output lands here
        with otelflow.workflow_scope("diamond", workflow_id="wf-diamond"):
            a = apps.sleepy(1)
            with otelflow.block("middle"):
                b = apps.sleepy(2, inputs=[a])
                c = apps.sleepy(3, inputs=[a])
            d = apps.sleepy(0, inputs=[b, c])
            out["diamond"] = d.result(timeout=60)
        g = apps.boom()
        h = apps.sleepy(0, inputs=[g])
        with pytest.raises(ValueError):
            g.result(timeout=60)
        with pytest.raises(parsl.dataflow.errors.DependencyError):
            h.result(timeout=60)
        out["flaky"] = apps.flaky(str(tmp / "flaky.marker")).result(timeout=60)
        out["cached"] = [apps.cached(7).result(timeout=60), apps.cached(7).result(timeout=60)]
        out["join"] = apps.outer(5).result(timeout=60)
        out["bash"] = apps.shout("hello", stdout=str(tmp / "shout.out")).result(timeout=60)
        out["ids"] = {
            name: otelflow_parsl.task_id_of(f) for name, f in {"a": a, "b": b, "c": c, "d": d, "g": g, "h": h}.items()
        }
        if with_otelflow:
            out["metrics"] = reader.get_metrics_data()
    finally:
        children = me.children(recursive=True)
        dfk.cleanup()
        parsl.clear()
        for proc in children:  # anything Parsl left behind (worker pools, interchange)
            if proc.is_running() and not _is_resource_tracker(proc):
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if tel is not None:
            tel.stop()
    out["run_dir"] = tel.run_dir if tel is not None else None
    out["parsl_log"] = Path(dfk.run_dir) / "parsl.log"
    return out


def _is_resource_tracker(proc: Any) -> bool:
    """multiprocessing's own helper: it exits with this process; killing it only makes it restart."""
    try:
        return any("resource_tracker" in part for part in proc.cmdline())
    except Exception:  # gone already
        return True


def _spans(run_dir: Path) -> list[dict[str, Any]]:
    spans = []
    for f in sorted(run_dir.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("section") == "span":
                spans.append(rec)
    return spans


@pytest.fixture(scope="module", params=["threads", "htex"])
def recorded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    mp = pytest.MonkeyPatch()
    cwd = os.getcwd()
    try:
        out = _scenario(request.param, tmp_path_factory.mktemp(request.param), mp, with_otelflow=True)
        out["kind"] = request.param
        out["spans"] = _spans(out["run_dir"])
        out["tasks"] = {s["attributes"]["otelflow.task.id"]: s for s in out["spans"] if s["kind"] == "task"}
        yield out
    finally:
        os.chdir(cwd)
        mp.undo()


def _events(span: dict[str, Any]) -> dict[str, int]:
    return dict(span["events"])


def test_apps_return_what_parsl_returns(recorded: dict[str, Any]) -> None:
    assert recorded["diamond"] == (1 + 2) + (1 + 3)
    assert recorded["flaky"] == "second attempt ok"
    assert recorded["cached"] == [70, 70]
    assert recorded["join"] == 5
    assert recorded["bash"] == 0


def test_diamond_four_levels_links_and_worker_execution_time(recorded: dict[str, Any]) -> None:
    tasks, ids = recorded["tasks"], recorded["ids"]
    scopes = {s["name"]: s for s in recorded["spans"] if s["kind"] in ("workflow", "block", "session")}
    wf, blk = scopes["workflow diamond"], scopes["block middle"]
    session = next(s for s in recorded["spans"] if s["kind"] == "session")
    assert wf["parent_span_id"] == session["span_id"]  # session → workflow → block → task
    assert blk["parent_span_id"] == wf["span_id"]
    assert tasks[ids["a"]]["parent_span_id"] == wf["span_id"]
    assert tasks[ids["b"]]["parent_span_id"] == blk["span_id"]
    assert tasks[ids["c"]]["parent_span_id"] == blk["span_id"]
    assert tasks[ids["d"]]["parent_span_id"] == wf["span_id"]
    span_of = {tid: tasks[tid]["span_id"] for tid in tasks}
    assert tasks[ids["b"]]["links"] == [span_of[ids["a"]]]
    assert sorted(tasks[ids["d"]]["links"]) == sorted([span_of[ids["b"]], span_of[ids["c"]]])
    for name in "abcd":
        span = tasks[ids[name]]
        ev = _events(span)
        assert span["name"] == "sleepy" and span["status"] == "completed"
        assert span["attributes"]["otelflow.workflow.id"] == "wf-diamond"
        execution = (ev["TaskCompleted"] - ev["TaskStarted"]) / 1e9
        # The sleep sets the floor; the ceiling leaves a loaded machine a second of stalls.
        assert SLEEP - TOL <= execution < SLEEP + 1.0, (name, execution)
        assert ev["TaskCreated"] <= ev["TaskResolved"] <= ev["TaskSubmitted"] <= ev["TaskStarted"]
    # d is resolved only after both b and c ended (their worker-side end times).
    assert _events(tasks[ids["d"]])["TaskResolved"] >= max(
        _events(tasks[ids[n]])["TaskCompleted"] for n in "bc"
    )
    if recorded["kind"] == "htex":  # measured in the worker processes, not here
        workers = {tasks[ids[n]]["attributes"]["otelflow.task.worker"] for n in "abcd"}
        assert all(w.split(":")[-1] != str(os.getpid()) for w in workers)


def test_user_spans_inside_apps_nest_under_the_task(recorded: dict[str, Any]) -> None:
    tasks, ids = recorded["tasks"], recorded["ids"]
    user = [s for s in recorded["spans"] if s["name"] == "user-work"]
    parents = {s.get("parent_span_id") for s in user}
    for name in "abcd":
        assert tasks[ids[name]]["span_id"] in parents


def test_failure_typed_and_dependent_upstream_failed(recorded: dict[str, Any]) -> None:
    tasks, ids = recorded["tasks"], recorded["ids"]
    g, h = tasks[ids["g"]], tasks[ids["h"]]
    assert g["status"] == "failed" and g["attributes"]["error.type"] == "ValueError"
    assert "boom from the app" in g["error_message"]
    assert h["status"] == "failed" and h["attributes"]["error.type"] == "UpstreamFailed"
    assert h["attributes"]["parsl.error_type"] == "parsl.dataflow.errors.DependencyError"
    assert "TaskStarted" not in _events(h)
    assert h["links"] == [g["span_id"]]


def test_retried_app_is_one_task_with_both_attempts(recorded: dict[str, Any]) -> None:
    flaky = [s for s in recorded["tasks"].values() if s["name"] == "flaky"]
    assert len(flaky) == 1
    attrs = flaky[0]["attributes"]
    assert flaky[0]["status"] == "completed"
    assert attrs["parsl.tries"] == 2
    assert attrs["parsl.try.0.error_type"] == "RuntimeError"
    assert "first attempt fails" in attrs["parsl.try.0.error_message"]
    assert attrs["parsl.try.0.end_ns"] <= _events(flaky[0])["TaskCompleted"]


def test_memoized_second_call_is_a_cache_hit(recorded: dict[str, Any]) -> None:
    cached = sorted((s for s in recorded["tasks"].values() if s["name"] == "cached"), key=lambda s: s["start_time"])
    assert len(cached) == 2
    assert "otelflow.task.from_cache" not in cached[0]["attributes"]
    assert cached[1]["attributes"]["otelflow.task.from_cache"] is True
    assert "TaskStarted" not in _events(cached[1])
    hits = [
        point
        for rm in recorded["metrics"].resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "otelflow.parsl.cache_hits"
        for point in metric.data.data_points
    ]
    assert [(dict(p.attributes), p.value) for p in hits] == [({"otelflow.task.name": "cached"}, 1)]


def test_join_app_children_nest_under_it(recorded: dict[str, Any]) -> None:
    tasks = recorded["tasks"]
    outer = next(s for s in tasks.values() if s["name"] == "outer")
    inner = [s for s in tasks.values() if s.get("parent_span_id") == outer["span_id"]]
    assert [s["name"] for s in inner] == ["sleepy"]
    assert outer["attributes"]["parsl.join_app"] is True
    # The join task ends when the app it joined ended, not when its own body returned.
    assert outer["end_time"] >= inner[0]["end_time"]


def test_bash_app_recorded(recorded: dict[str, Any]) -> None:
    shout = [s for s in recorded["tasks"].values() if s["name"] == "shout"]
    assert len(shout) == 1 and shout[0]["status"] == "completed"


_STATE = re.compile(r"Task (\d+) (?:changing state from \w+ to|initializing state to) (\w+)")
_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ [\w.]+:\d+ \S+ \S+ \w+ \w+ \[\w+\] ")


def _log_shape(path: Path) -> tuple[dict[str, list[str]], set[str], list[str]]:
    states: dict[str, list[str]] = {}
    loggers: set[str] = set()
    odd: list[str] = []
    for line in path.read_text().splitlines():
        m = _STATE.search(line)
        if m:
            states.setdefault(m.group(1), []).append(m.group(2))
        if "otelflow" in line:
            odd.append(line)
        parts = line.split(" ")
        if len(parts) > 2 and ":" in parts[2]:
            loggers.add(parts[2].split(":")[0])
    return states, loggers, odd


@pytest.mark.parametrize("kind", ["threads", "htex"])
def test_parsl_log_file_unchanged_by_otelflow(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = os.getcwd()
    try:
        plain = _scenario(kind, tmp_path / "plain", monkeypatch, with_otelflow=False)
        os.chdir(cwd)
        (tmp_path / "with").mkdir()
        logging.getLogger("otelflow").setLevel(logging.WARNING)
        inst = _scenario(kind, tmp_path / "with", monkeypatch, with_otelflow=True, capture_logs=True)
    finally:
        os.chdir(cwd)
    s_plain, l_plain, odd_plain = _log_shape(plain["parsl_log"])
    s_inst, l_inst, odd_inst = _log_shape(inst["parsl_log"])
    assert s_plain and s_inst == s_plain  # every task went through the same states, logged the same way
    assert Counter(l_inst) == Counter(l_plain) or l_inst <= l_plain | {"parsl.dataflow.memoization"}
    assert odd_inst == odd_plain == []
    if kind == "htex":  # the manager's and workers' logs: same loggers, nothing of otelflow's
        def worker_logs(run: dict[str, Any]) -> tuple[set[str], list[str]]:
            names: set[str] = set()
            odd: list[str] = []
            for f in run["parsl_log"].parent.glob("htex/block-*/*/*.log"):
                for line in f.read_text().splitlines():
                    parts = line.split(" ")
                    if len(parts) > 5 and ":" in parts[5]:
                        names.add(parts[5].split(":")[0])
                    if "otelflow" in line:
                        odd.append(line)
            return names, odd

        w_plain, w_inst = worker_logs(plain), worker_logs(inst)
        assert w_plain[0] and w_inst[0] == w_plain[0]
        assert w_inst[1] == w_plain[1] == []
    # ... while Parsl's records were captured into the run as log events too.
    logs = [
        json.loads(line)
        for f in inst["run_dir"].glob("*.jsonl")
        for line in f.read_text().splitlines()
        if '"section":"log"' in line
    ]
    states = [r for r in logs if r.get("logger") == "parsl.dataflow.dflow" and "changing state" in r.get("message", "")]
    assert len(states) >= sum(len(v) for v in s_inst.values()) - len(s_inst)
    # Wide events: each carries Parsl's own structured extras.
    assert all({"parsl.task", "parsl.task_state"} <= set(r.get("attributes") or {}) for r in states)
    assert {r["attributes"]["parsl.task_state"] for r in states} >= {"launched", "exec_done"}


def test_importing_otelflow_imports_neither_parsl_nor_academy() -> None:
    import subprocess

    code = (
        "import sys, otelflow, otelflow.toolkit, otelflow.integrations; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('parsl', 'academy')))"
    )
    root = str(Path(__file__).parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture
def thread_dfk(tmp_path: Path) -> Iterator[Any]:
    dfk = parsl.load(Config(executors=[ThreadPoolExecutor(label="threads", max_threads=2)], run_dir=str(tmp_path)))
    try:
        yield dfk
    finally:
        dfk.cleanup()
        parsl.clear()


def test_uninstrument_restores_the_dfk_and_stops_recording(thread_dfk: Any, tmp_path: Path) -> None:
    hooks = ("_update_task_state", "launch_task", "_complete_task_exception")
    with otelflow.start_telemetry(checkpoint_path=str(tmp_path / "tel"), resource_poll_interval=0) as tel:
        otelflow.instrument(thread_dfk)
        assert otelflow_parsl.is_instrumented(thread_dfk)
        assert apps.cached(1).result(timeout=30) == 10
        otelflow.uninstrument(thread_dfk)
        assert not otelflow_parsl.is_instrumented(thread_dfk)
        assert not any(h in vars(thread_dfk) for h in hooks)
        assert "submit" not in vars(thread_dfk.executors["threads"])
        assert apps.cached(2).result(timeout=30) == 20  # runs, unrecorded
        tel.flush()
        assert tel.summary()["tasks"]["completed"] == 1


def test_other_parsl_versions_get_a_warning_and_non_dfks_a_type_error(
    thread_dfk: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(parsl, "__version__", "2099.1.1")
    with caplog.at_level(logging.WARNING, logger="otelflow"):
        otelflow_parsl.instrument(thread_dfk)
    assert any("2099.1.1" in r.getMessage() and "pin parsl==" in r.getMessage() for r in caplog.records)
    assert otelflow_parsl.is_instrumented(thread_dfk)
    otelflow.uninstrument(thread_dfk)
    with pytest.raises(TypeError, match="DataFlowKernel"):
        otelflow_parsl.instrument(object())  # type: ignore[arg-type]


def test_a_datafuture_input_is_a_dependency(thread_dfk: Any, tmp_path: Path) -> None:
    from parsl.data_provider.files import File

    with otelflow.start_telemetry(checkpoint_path=str(tmp_path / "tel"), resource_poll_interval=0) as tel:
        otelflow.instrument(thread_dfk)
        writer = apps.write_file("hello", outputs=[File(str(tmp_path / "a.txt"))])
        reader = apps.read_file(inputs=[writer.outputs[0]])  # a DataFuture, not the AppFuture
        assert reader.result(timeout=30) == "hello"
        ids = otelflow_parsl.task_id_of(writer), otelflow_parsl.task_id_of(reader)
    tasks = {s["attributes"]["otelflow.task.id"]: s for s in _spans(tel.run_dir) if s["kind"] == "task"}
    assert tasks[ids[1]]["attributes"]["otelflow.task.depends_on"] == [ids[0]]
    assert tasks[ids[1]]["links"] == [tasks[ids[0]]["span_id"]]
