"""Instrumented ProcessPoolExecutor with fork and spawn: worker-side truth, context, crashes.

Pools are shared per start method within this module (worker start-up dominates the time);
each test starts its own telemetry run, which the workers follow.
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from concurrent.futures import CancelledError, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

import otelflow
from otelflow.integrations import UpstreamFailedError, instrument, task_id_of
from tests.conftest import read_lines

METHODS = [m for m in ("fork", "spawn") if m in mp.get_all_start_methods()]

otelflow.define_event("tests.WorkerNote", n=int)


# --- task functions (importable by spawned workers) -----------------------------------------


def inc(x: int = 0, by: int = 1) -> int:
    return x + by


def boom(*_a: Any) -> None:
    raise KeyError("missing")


def wait_for_path(path: str) -> None:
    """Hold the worker until ``path`` exists (at most 60 s): a gate the test opens."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)


def timed_sleep(seconds: float) -> tuple[int, int]:
    """Sleep and return the worker's own (start, end) clock readings around it."""
    start = time.time_ns()
    time.sleep(seconds)
    return start, time.time_ns()


def traced(n: int) -> dict[str, Any]:
    with trace.get_tracer("tests.user").start_as_current_span("user-work") as span:
        otelflow.emit("tests.WorkerNote", n=n)
        ctx = span.get_span_context()
        recording = span.is_recording()
    return {"pid": os.getpid(), "trace_id": f"{ctx.trace_id:032x}", "recording": recording}


def inherited_state() -> dict[str, Any]:
    from otelflow import _global

    tel = _global.current()
    return {
        "threads": sorted(t.name for t in threading.enumerate()),
        "telemetry_role": getattr(tel, "_role", None),
        "telemetry_pid_file": tel._jsonl.path.name if tel is not None and tel._jsonl is not None else None,
    }


def allocate(mib: int) -> int:
    block = bytearray(mib * 1024 * 1024)
    block[::4096] = b"\1" * len(block[::4096])  # touch every page
    return len(block)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


# --- helpers ----------------------------------------------------------------------------------


_pools: dict[tuple[str, int], ProcessPoolExecutor] = {}


@pytest.fixture(scope="module", autouse=True)
def _shutdown_pools():
    yield
    for p in _pools.values():
        p.shutdown(wait=True, cancel_futures=True)
    _pools.clear()


def shared_pool(method: str, workers: int = 2) -> ProcessPoolExecutor:
    key = (method, workers)
    if key not in _pools:
        _pools[key] = instrument(ProcessPoolExecutor(workers, mp_context=mp.get_context(method)))
    return _pools[key]


@pytest.fixture
def tel(tmp_path):
    t = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={})
    yield t
    t.stop()


def task_spans(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {s["attributes"]["otelflow.task.id"]: s for s in read_lines(run_dir, "span") if s["kind"] == "task"}


def events_by_task(run_dir: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for e in read_lines(run_dir, "event"):
        if e.get("task_id"):
            out.setdefault(e["task_id"], {})[e["type"]] = e["event_time"]
    return out


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_two_hundred_chained_tasks_give_a_faithful_tree(tel, method):
    pool = shared_pool(method)
    with otelflow.workflow_scope("chain"), otelflow.block("steps"):
        a = pool.submit(inc, 0)
        b = pool.submit(inc, 1000)
        futs = [a, b]
        for i in range(99):
            a = pool.submit(inc, a)  # a future argument
            b = pool.submit(inc, 1000 + i + 1, depends_on=[b])  # an explicit dependency
            futs += [a, b]
    assert a.result(timeout=60) == 100 and b.result(timeout=60) == 1100
    tel.stop()

    lines = read_lines(tel.run_dir, "span")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for s in lines:
        by_kind.setdefault(s["kind"], []).append(s)
    tasks = by_kind["task"]
    assert len(tasks) == 200
    assert len({s["attributes"]["otelflow.task.id"] for s in tasks}) == 200  # one span each
    (session,) = by_kind["session"]  # the parent's only: workers join its session and write none
    (workflow,) = by_kind["workflow"]
    (block,) = by_kind["block"]
    assert block["parent_span_id"] == workflow["span_id"] and workflow["parent_span_id"] == session["span_id"]
    assert {s["parent_span_id"] for s in tasks} == {block["span_id"]}
    assert {s["trace_id"] for s in tasks} == {session["trace_id"]}

    spans = task_spans(tel.run_dir)
    events = events_by_task(tel.run_dir)
    ids = [task_id_of(f) for f in futs]
    for k, tid in enumerate(ids):
        span = spans[tid]
        ev = events[tid]
        assert span["status"] == "completed"
        assert ev["TaskSubmitted"] <= ev["TaskStarted"] <= ev["TaskCompleted"]
        assert span["attributes"]["otelflow.task.worker"].split(":")[-1] != str(os.getpid())
        assert span["attributes"]["otelflow.task.cpu_time_s"] >= 0
        assert span["attributes"]["otelflow.task.peak_rss_bytes"] > 1_000_000
        if k >= 2:
            up = ids[k - 2]
            assert span["links"] == [spans[up]["span_id"]]
            assert span["attributes"]["otelflow.task.depends_on"] == [up]
            assert ev["TaskResolved"] >= events[up]["TaskCompleted"]
            assert ev["TaskSubmitted"] >= ev["TaskResolved"]
        else:
            assert not span.get("links")


@pytest.mark.parametrize("method", METHODS)
def test_user_span_in_a_worker_process_is_a_child_of_the_task_span(tel, method):
    pool = shared_pool(method)
    with otelflow.workflow_scope("traced") as wid:
        futs = [pool.submit(traced, n) for n in range(4)]
        results = [f.result(timeout=30) for f in futs]
    assert all(r["recording"] for r in results)
    assert all(r["trace_id"] == tel.trace_id for r in results)
    assert all(r["pid"] != os.getpid() for r in results)
    tel.stop()

    spans = task_spans(tel.run_dir)
    worker_files = sorted(p.name for p in tel.run_dir.glob("worker-*.jsonl"))
    assert worker_files, "the worker session wrote no file"
    user = [s for s in read_lines(tel.run_dir, "span") if s["name"] == "user-work"]
    assert len(user) == 4
    assert {s["parent_span_id"] for s in user} == {spans[task_id_of(f)]["span_id"] for f in futs}
    assert {s["trace_id"] for s in user} == {tel.trace_id}
    notes = [e for e in read_lines(tel.run_dir, "event") if e["type"] == "tests.WorkerNote"]
    assert sorted(e["n"] for e in notes) == [0, 1, 2, 3]
    assert {e["session_id"] for e in notes} == {tel.session_id}
    assert {e["workflow_id"] for e in notes} == {wid}
    assert {e["trace_id"] for e in notes} == {tel.trace_id}


@pytest.mark.parametrize("method", METHODS)
def test_with_a_trace_per_workflow_worker_spans_are_in_the_tasks_trace_under_it(tmp_path, method):
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={}, trace_per="workflow"
    )
    try:
        pool = shared_pool(method)
        with otelflow.workflow_scope("traced"):
            futs = [pool.submit(traced, n) for n in range(2)]
            results = [f.result(timeout=30) for f in futs]
    finally:
        tel.stop()
    spans = task_spans(tel.run_dir)
    (wf,) = [s for s in read_lines(tel.run_dir, "span") if s["kind"] == "workflow"]
    assert wf["trace_id"] != tel.trace_id  # the workflow has a trace of its own
    assert {spans[task_id_of(f)]["trace_id"] for f in futs} == {wf["trace_id"]}
    user = [s for s in read_lines(tel.run_dir, "span") if s["name"] == "user-work"]
    # Made in the worker, in the trace the task is in, under the task's span.
    assert {r["trace_id"] for r in results} == {s["trace_id"] for s in user} == {wf["trace_id"]}
    assert {s["parent_span_id"] for s in user} == {spans[task_id_of(f)]["span_id"] for f in futs}


@pytest.mark.parametrize("method", METHODS)
def test_one_worker_measures_execution_and_growing_queue_waits(tel, method, tmp_path):
    pool = shared_pool(method, workers=1)
    pool.submit(inc).result(timeout=30)  # the worker is up
    gate = tmp_path / "gate"
    held = pool.submit(wait_for_path, str(gate))  # the worker waits here until all three are queued
    futs = [pool.submit(timed_sleep, 0.2) for _ in range(3)]
    gate.touch()
    wait([held, *futs], timeout=60)
    tel.stop()
    events = events_by_task(tel.run_dir)
    chain = [events[task_id_of(f)] for f in (held, *futs)]
    execs, waits = [], []
    for f, ev in zip(futs, chain[1:], strict=True):
        own_start, own_end = f.result()
        # The recorded times are the worker's: they bracket the task's own readings, and
        # (below) lie between the ends of its neighbours on the one worker. Stated with the
        # stamps, not with a closeness in ms that a loaded machine's stalls break.
        assert ev["TaskStarted"] <= own_start and own_end <= ev["TaskCompleted"]
        execs.append((ev["TaskCompleted"] - ev["TaskStarted"]) / 1e9)
        waits.append((ev["TaskStarted"] - ev["TaskSubmitted"]) / 1e9)
    assert all(e >= 0.2 for e in execs), execs
    # One worker, all three queued before the first starts: each waits in the queue until
    # the task before it ends, so the waits grow by one execution each.
    for before, after, wait_s in zip(chain[:-1], chain[1:], waits, strict=True):
        assert after["TaskSubmitted"] <= before["TaskCompleted"] <= after["TaskStarted"], chain
        assert wait_s * 1e9 >= before["TaskCompleted"] - after["TaskSubmitted"], (waits, chain)


@pytest.mark.parametrize("method", METHODS)
def test_failures_cancellation_and_upstream_errors(tel, method, tmp_path):
    pool = shared_pool(method, workers=1)
    gate = tmp_path / "gate"
    blocker = pool.submit(wait_for_path, str(gate))  # holds the worker until the cancel is done
    try:
        failing = pool.submit(boom)
        downstream = pool.submit(inc, failing)
        queued = [pool.submit(inc) for _ in range(3)]
        canceled = queued[-1]  # the pool keeps one call queued ahead; the last one is still pending
        assert canceled.cancel()
    finally:
        gate.touch()
    with pytest.raises(KeyError, match="missing"):
        failing.result(timeout=30)
    with pytest.raises(UpstreamFailedError, match="KeyError"):
        downstream.result(timeout=30)
    with pytest.raises(CancelledError):
        canceled.result()
    blocker.result(timeout=30)
    tel.stop()
    spans = task_spans(tel.run_dir)
    f = spans[task_id_of(failing)]
    assert f["status"] == "failed" and f["attributes"]["error.type"] == "KeyError"
    assert "TaskStarted" in dict(f["events"])  # measured in the worker, even though it raised
    assert f["attributes"]["otelflow.task.cpu_time_s"] >= 0
    assert spans[task_id_of(downstream)]["status"] == "failed"
    c = spans[task_id_of(canceled)]
    assert c["status"] == "canceled" and "TaskStarted" not in dict(c["events"])


@pytest.mark.parametrize("method", METHODS)
def test_peak_rss_is_the_tasks_own(tel, method):
    pool = shared_pool(method, workers=1)
    big = pool.submit(allocate, 64)
    small = pool.submit(inc)
    wait([big, small], timeout=30)
    tel.stop()
    spans = task_spans(tel.run_dir)
    big_rss = spans[task_id_of(big)]["attributes"]["otelflow.task.peak_rss_bytes"]
    small_rss = spans[task_id_of(small)]["attributes"]["otelflow.task.peak_rss_bytes"]
    assert big_rss - small_rss > 48 * 1024 * 1024, (big_rss, small_rss)


@pytest.mark.parametrize("method", METHODS)
def test_a_killed_worker_is_a_failed_task_and_the_run_goes_on(tel, method):
    ctx = mp.get_context(method)
    with instrument(ProcessPoolExecutor(2, mp_context=ctx)) as pool:
        done = [pool.submit(traced, n) for n in range(3)]
        wait(done, timeout=30)
        killed = pool.submit(die)
        with pytest.raises(BrokenProcessPool):
            killed.result(timeout=30)
    with instrument(ProcessPoolExecutor(2, mp_context=ctx)) as pool:
        after = pool.submit(inc, 41)
        assert after.result(timeout=30) == 42
    tel.stop()
    spans = task_spans(tel.run_dir)
    k = spans[task_id_of(killed)]
    assert k["status"] == "failed" and k["attributes"]["error.type"].endswith("BrokenProcessPool")
    assert all(spans[task_id_of(f)]["status"] == "completed" for f in (*done, after))
    # What the workers wrote before the crash is there: each finished task's user span.
    assert len([s for s in read_lines(tel.run_dir, "span") if s["name"] == "user-work"]) == 3


@pytest.mark.parametrize("method", METHODS)
def test_workers_inherit_no_telemetry_threads_or_files(tel, method):
    pool = shared_pool(method)
    pool.submit(traced, 0).result(timeout=30)  # the worker session is started
    state = pool.submit(inherited_state).result(timeout=30)
    assert "otelflow-dispatcher" not in state["threads"] or state["telemetry_role"] == "worker"
    assert state["telemetry_role"] in (None, "worker")
    if state["telemetry_pid_file"] is not None:  # its own file, never the parent's
        assert state["telemetry_pid_file"].startswith("worker-")
    tel.stop()
    mains = list(tel.run_dir.glob("main-*.jsonl"))
    assert len(mains) == 1 and mains[0].name.endswith(f"-{os.getpid()}.jsonl")


def thread_names() -> list[str]:
    # A thread that is ending may still be listed right after the fork: wait for it to go
    # (polled, up to 10 s), but return what is there then, so one that stays still fails.
    deadline = time.monotonic() + 10
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    return sorted(t.name for t in threading.enumerate())


@pytest.mark.skipif("fork" not in METHODS, reason="no fork here")
def test_a_forked_worker_runs_no_thread_of_the_parent(tel):
    with instrument(ProcessPoolExecutor(1, mp_context=mp.get_context("fork")), worker_telemetry=False) as pool:
        assert pool.submit(thread_names).result(timeout=30) == ["MainThread"]


@pytest.mark.skipif("forkserver" not in mp.get_all_start_methods(), reason="no forkserver here")
def test_forkserver_works_too(tel):
    with instrument(ProcessPoolExecutor(2, mp_context=mp.get_context("forkserver"))) as pool:
        r = pool.submit(traced, 9).result(timeout=60)
        assert pool.submit(inc, pool.submit(inc, 1)).result(timeout=30) == 3
    assert r["trace_id"] == tel.trace_id
    tel.stop()
    assert len(task_spans(tel.run_dir)) == 3
    assert [s for s in read_lines(tel.run_dir, "span") if s["name"] == "user-work"]


@pytest.mark.parametrize("method", METHODS)
def test_worker_telemetry_off_still_measures_tasks(tel, method):
    with instrument(ProcessPoolExecutor(1, mp_context=mp.get_context(method)), worker_telemetry=False) as pool:
        fut = pool.submit(traced, 1)
        assert fut.result(timeout=30)["recording"] is False  # no session in the worker
    tel.stop()
    assert not list(tel.run_dir.glob("worker-*.jsonl"))
    span = task_spans(tel.run_dir)[task_id_of(fut)]
    assert span["status"] == "completed" and "otelflow.task.cpu_time_s" in span["attributes"]


def test_the_ml_pipelines_example_records_the_four_level_tree(tmp_path):
    path = Path(__file__).resolve().parents[2] / "examples" / "ml_pipelines.py"
    spec = importlib.util.spec_from_file_location("ml_pipelines_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so the pool can pickle its task functions by name
    try:
        spec.loader.exec_module(module)
        summary = module.run(str(tmp_path), tasks_scale=1, workers=2)
    finally:
        sys.modules.pop(spec.name, None)
    assert summary["tasks"]["completed"] == 24 and summary["tasks"]["failed"] == 0
    assert list(summary["stages"]) == ["load", "preprocess", "train", "evaluate"]
    assert summary["stages"]["load"]["dependency_wait_s"] == 0
    for stage in ("preprocess", "train", "evaluate"):
        assert summary["stages"][stage]["dependency_wait_s"] > 0.05
    spans = read_lines(Path(summary["run_dir"]), "span")
    by_id = {s["span_id"]: s for s in spans}
    train = next(s for s in spans if s["kind"] == "task" and s["name"] == "train")
    chain = [train["kind"]]
    node = train
    while node.get("parent_span_id") in by_id:
        node = by_id[node["parent_span_id"]]
        chain.append(node["kind"])
    assert chain == ["task", "block", "workflow", "session"]
    epochs = [s for s in spans if s["name"] == "epoch" and s["parent_span_id"] == train["span_id"]]
    assert len(epochs) == module.EPOCHS
