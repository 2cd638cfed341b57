"""The public integration toolkit: scopes carried, work measured, workers joining the run."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing as mp
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import pytest
from opentelemetry import trace

import otelflow
from otelflow import toolkit
from otelflow._task_context import current_task_id
from otelflow.logs.capture import LogCapture


def _spans(run_dir):
    out = []
    for path in run_dir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("section") == "span":
                out.append(rec)
    return out


@pytest.fixture
def tel(tmp_path):
    t = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0)
    yield t
    t.stop()


def test_a_scope_ref_pickles_and_round_trips_through_a_dict(tel):
    with otelflow.workflow_scope("wf", workflow_id="wf-1"), otelflow.block("b", block_id="b-1"):
        ref = otelflow.current_scope()
    assert ref is not None
    assert (ref.workflow_id, ref.workflow_name, ref.block_id, ref.block_name) == ("wf-1", "wf", "b-1", "b")
    assert pickle.loads(pickle.dumps(ref)) == ref
    assert toolkit.ScopeRef.from_dict(ref.to_dict()) == ref
    assert toolkit.ScopeRef.from_dict("not a dict") is None
    assert otelflow.current_scope() is None


def test_an_adopted_scope_groups_tasks_made_in_an_engine_thread(tel):
    trk = otelflow.tracker(backend="engine")
    with otelflow.workflow_scope("wf", workflow_id="wf-1"), otelflow.block("b", block_id="b-1"):
        ref = otelflow.current_scope()

        def engine_thread() -> None:  # a fresh thread: no copied context
            with otelflow.adopt_scope(ref):
                tid = trk.created("in-thread", "step")
                trk.started(tid)
                trk.completed(tid)

        th = threading.Thread(target=engine_thread)
        th.start()
        th.join()
    tel.stop()
    spans = _spans(tel.run_dir)
    block_span = next(s for s in spans if s["kind"] == "block")
    task = next(s for s in spans if s["kind"] == "task")
    assert task["parent_span_id"] == block_span["span_id"]
    assert task["attributes"]["otelflow.workflow.id"] == "wf-1"
    assert task["attributes"]["otelflow.block.id"] == "b-1"


def test_adopt_scope_ignores_a_wrong_value():
    with otelflow.adopt_scope("wf-1") as got:  # type: ignore[arg-type]
        assert got is None
        assert otelflow.current_scope() is None


def test_enter_adopted_scope_with_and_without_its_span_and_alternating_scopes(tel):
    with otelflow.workflow_scope("wf", workflow_id="wf-1"), otelflow.block("b", block_id="b-1"):
        block_ref = otelflow.current_scope()
        block_span = trace.get_current_span().get_span_context().span_id
    with otelflow.workflow_scope("other", workflow_id="wf-2"):
        wf_ref = otelflow.current_scope()
    assert block_ref is not None and wf_ref is not None
    outside = trace.get_current_span()
    # Alternating between two scopes (a worker running tasks of two workflows) each time
    # makes that scope current, ids and names both.
    for ref, ids in ((block_ref, ("wf-1", "b-1")), (wf_ref, ("wf-2", None)), (block_ref, ("wf-1", "b-1"))):
        entry = otelflow.scope.enter_adopted_scope(ref)
        assert otelflow.scope.current_ids()[1:] == ids
        got = otelflow.current_scope()
        assert got is not None and (got.workflow_name, got.block_name) == (ref.workflow_name, ref.block_name)
        otelflow.scope.exit_adopted_scope(entry)
        assert otelflow.current_scope() is None
    entry = otelflow.scope.enter_adopted_scope(block_ref)
    assert trace.get_current_span().get_span_context().span_id == block_span  # the scope's span
    otelflow.scope.exit_adopted_scope(entry)
    entry = otelflow.scope.enter_adopted_scope(block_ref, span=False)
    assert otelflow.scope.current_ids()[1:] == ("wf-1", "b-1")
    assert trace.get_current_span() is outside  # ids only: the caller makes its own span current
    otelflow.scope.exit_adopted_scope(entry)
    entry = otelflow.scope.enter_adopted_scope("not a scope")  # type: ignore[arg-type]
    assert otelflow.current_scope() is None
    otelflow.scope.exit_adopted_scope(entry)


def test_measured_makes_the_task_span_current_over_its_adopted_scope(tel):
    with otelflow.workflow_scope("wf", workflow_id="wf-1"), otelflow.block("b", block_id="b-1"):
        cfg = toolkit.carrier()
    assert cfg is not None

    def inside() -> tuple[int, tuple[str | None, str | None], str | None]:
        return trace.get_current_span().get_span_context().span_id, otelflow.scope.current_ids()[1:], current_task_id()

    def boom() -> None:
        raise ValueError("x")

    span_id, ids, task = toolkit.Measured(inside, "t-7", cfg)().value
    assert f"{span_id:016x}" == toolkit.task_span_id(cfg.trace_id, "t-7")
    assert ids == ("wf-1", "b-1") and task == "t-7"
    with pytest.raises(ValueError):
        toolkit.Measured(boom, "t-8", cfg)()
    # Undone after the call, whether it returned or raised.
    assert otelflow.current_scope() is None and current_task_id() is None
    assert not trace.get_current_span().get_span_context().is_valid


def test_measured_returns_the_value_and_worker_side_times():
    def work(x: int) -> int:
        time.sleep(0.05)
        return x + 1

    before = time.time_ns()
    ret = toolkit.Measured(work, "t-1")(41)
    assert ret.value == 42
    out = ret.outcome
    assert out.ok and out.task_id == "t-1"
    assert before <= out.start_ns < out.end_ns <= time.time_ns()
    assert out.end_ns - out.start_ns >= 50_000_000
    assert out.cpu_time_s is not None and out.cpu_time_s < 0.05  # sleeping uses no CPU
    assert out.peak_rss_bytes is None  # in the submitting process: not a task figure
    assert pickle.loads(pickle.dumps(ret)).value == 42


def _raise_here() -> None:
    raise KeyError("missing")


def test_measured_attaches_the_outcome_with_a_stacktrace_to_the_exception():
    with pytest.raises(KeyError) as info:
        toolkit.Measured(_raise_here, "t-2")()
    out = toolkit.outcome_of(info.value)
    assert out is not None and not out.ok
    assert out.error_type == "KeyError"
    assert "'missing'" in (out.error_message or "")
    assert "_raise_here" in (out.stacktrace or "")
    assert toolkit.outcome_of(ValueError()) is None


def test_async_measured_awaits_coroutines():
    async def work() -> str:
        await asyncio.sleep(0.01)
        return "done"

    ret = asyncio.run(toolkit.AsyncMeasured(work, "t-3")())
    assert ret.value == "done" and ret.outcome.ok
    assert ret.outcome.cpu_time_s is None


def test_record_outcome_records_the_worker_times(tel):
    trk = otelflow.tracker(backend="engine")
    tid = trk.created(None, "measured")
    trk.submitted(tid)
    ret = toolkit.Measured(lambda: time.sleep(0.02), tid)()
    trk.record_outcome(tid, ret.outcome)
    tid2 = trk.created(None, "measured")
    with pytest.raises(KeyError) as info:
        toolkit.Measured(_raise_here, tid2)()
    trk.record_outcome(tid2, toolkit.outcome_of(info.value))
    summary = tel.stop()
    assert summary["tasks"]["completed"] == 1 and summary["tasks"]["failed"] == 1
    events = [
        json.loads(line)
        for p in tel.run_dir.glob("*.jsonl")
        for line in p.read_text().splitlines()
        if '"section":"event"' in line
    ]
    started = next(e for e in events if e.get("type") == "TaskStarted" and e["task_id"] == tid)
    assert started["event_time"] == ret.outcome.start_ns
    failed = next(e for e in events if e.get("type") == "TaskFailed")
    assert failed["error_type"] == "KeyError" and "_raise_here" in failed["stacktrace"]


def test_a_task_made_inside_a_thread_pool_task_hangs_under_it(tel):
    inner = otelflow.task(lambda: None, name="inner")
    with otelflow.instrument(ThreadPoolExecutor(2)) as pool, otelflow.workflow_scope("wf"):
        pool.submit(inner).result()
    tel.stop()
    spans = _spans(tel.run_dir)
    outer = next(s for s in spans if s["name"] != "inner" and s.get("kind") == "task")
    nested = next(s for s in spans if s["name"] == "inner")
    assert nested["parent_span_id"] == outer["span_id"]


def test_carrier_round_trips_and_points_at_the_task(tel):
    c = toolkit.carrier("t-9")
    assert c is not None
    again = toolkit.Carrier.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c
    assert c.traceparent is not None
    assert c.traceparent.split("-")[2] == toolkit.task_span_id(c.trace_id, "t-9")
    assert toolkit.Carrier.from_dict({"run_id": 3}) is None


def test_carriers_and_outcomes_pickle_compactly_and_whole(tel):
    """A pool pickles the same carrier with every task: it travels as bytes encoded once, and
    a worker decodes each distinct carrier once; outcomes travel as positional tuples."""
    log_capture = LogCapture(loggers=("app",), level=logging.DEBUG, set_level=True)
    with otelflow.workflow_scope("wf"):
        scoped = msgspec.structs.replace(toolkit.carrier("t-1"), logs=log_capture)  # type: ignore[type-var]
    plain = toolkit.carrier()
    assert scoped is not None and plain is not None and scoped.scope is not None
    for c in (scoped, plain):
        blob = pickle.dumps(c)
        assert pickle.loads(blob) == c
        assert pickle.loads(blob) is pickle.loads(pickle.dumps(c))  # decoded once per carrier
    assert pickle.loads(pickle.dumps(scoped)) != pickle.loads(pickle.dumps(plain))
    # An equal carrier made anew (another id) pickles to the same bytes, and back.
    twin = msgspec.structs.replace(scoped)
    assert twin is not scoped and pickle.dumps(twin) == pickle.dumps(scoped)
    full = toolkit.Outcome(
        task_id="t-1",
        start_ns=1,
        end_ns=2,
        cpu_time_s=0.5,
        peak_rss_bytes=3,
        pid=4,
        worker="h:4",
        error_type="KeyError",
        error_message="m",
        stacktrace="st",
    )
    for out in (full, toolkit.Outcome(task_id="t-2", start_ns=5, end_ns=6)):
        assert pickle.loads(pickle.dumps(out)) == out
        ret = toolkit.Returned({"v": [1]}, out)
        assert pickle.loads(pickle.dumps(ret)) == ret
        assert b"error_message" not in pickle.dumps(ret)


class _TaggedCarrier(toolkit.Carrier, frozen=True, kw_only=True):
    tag: str = ""


class _TaggedOutcome(toolkit.Outcome, frozen=True, kw_only=True):
    tag: str = ""


def test_subclasses_and_hand_made_carriers_still_pickle_whole(tel):
    base = toolkit.carrier()
    assert base is not None
    tagged = _TaggedCarrier(**msgspec.structs.asdict(base), tag="x")
    again = pickle.loads(pickle.dumps(tagged))
    assert type(again) is _TaggedCarrier and again == tagged
    out = _TaggedOutcome(task_id="t", start_ns=1, end_ns=2, tag="y")
    assert pickle.loads(pickle.dumps(out)) == out
    # A field msgpack would not bring back as it is (a Path, not a str): the default pickling.
    odd = msgspec.structs.replace(base, runs_dir=Path("/tmp/x"))  # type: ignore[arg-type]
    back = pickle.loads(pickle.dumps(odd))
    assert back == odd and isinstance(back.runs_dir, Path)


def test_no_carrier_without_telemetry():
    assert toolkit.carrier("t") is None


def _forwarding_worker(c: toolkit.Carrier, q: mp.Queue) -> None:  # type: ignore[type-arg]
    assert toolkit.join_run(c, forward=q.put) is not None
    with toolkit.task_context(c, "t-remote"), trace.get_tracer("user").start_as_current_span("remote-span"):
        pass
    toolkit.flush_worker()
    toolkit.leave_run()
    q.put(None)


def test_a_worker_without_the_run_directory_forwards_its_lines_home(tel):
    c = toolkit.carrier("t-remote")
    assert c is not None
    elsewhere = toolkit.Carrier.from_dict({**c.to_dict(), "runs_dir": "/nonexistent/runs"})
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_forwarding_worker, args=(elsewhere, q))
    proc.start()
    written = 0
    while (batch := q.get(timeout=60)) is not None:
        written += toolkit.ingest(batch, "worker-remote-1")
    proc.join(30)
    assert proc.exitcode == 0
    assert written >= 1
    assert toolkit.ingest(b"not json\n", "worker-remote-1") == 0
    summary = tel.stop()
    assert summary["dropped"]["ingest_invalid"] == 1
    spans = _spans(tel.run_dir)
    remote = next(s for s in spans if s["name"] == "remote-span")
    assert remote["trace_id"] == c.trace_id
    assert remote["parent_span_id"] == toolkit.task_span_id(c.trace_id, "t-remote")
    assert (tel.run_dir / "worker-remote-1.jsonl").exists()


def _flushing_if_used(c: toolkit.Carrier, q: mp.Queue) -> None:  # type: ignore[type-arg]
    sent: list[bytes] = []
    assert toolkit.join_run(c, forward=sent.append) is not None
    toolkit.flush_worker(if_used=True)  # nothing recorded yet: no flush, nothing forwarded
    nothing = len(sent)
    with toolkit.task_context(c, "t-if-used"), trace.get_tracer("user").start_as_current_span("used"):
        pass
    toolkit.flush_worker(if_used=True)  # a span was recorded: flushed and forwarded now
    q.put((nothing, b"".join(sent)))
    toolkit.leave_run()


def test_flush_worker_if_used_flushes_only_what_a_task_recorded(tel):
    c = toolkit.carrier()
    assert c is not None
    elsewhere = toolkit.Carrier.from_dict({**c.to_dict(), "runs_dir": "/nonexistent/runs"})
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_flushing_if_used, args=(elsewhere, q))
    proc.start()
    nothing, data = q.get(timeout=60)
    proc.join(30)
    assert proc.exitcode == 0
    assert nothing == 0
    assert b'"name":"used"' in data


def test_ingest_keeps_files_inside_the_run_directory(tel):
    assert toolkit.ingest(b'{"section":"event"}\n', "../../escape") == 1
    assert [p.name for p in tel.run_dir.glob("*escape*")] == ["escape.jsonl"]
    assert not (tel.run_dir.parent.parent / "escape.jsonl").exists()


def test_join_run_without_a_reachable_directory_and_no_forward_starts_nothing(tel):
    c = toolkit.carrier()
    assert c is not None
    elsewhere = toolkit.Carrier.from_dict({**c.to_dict(), "runs_dir": "/nonexistent/runs"})
    assert toolkit.join_run(elsewhere) is None
