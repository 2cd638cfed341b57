"""The time an accepted event waits is bounded; otelflow's own waiting is never task time;
a scope object may be entered from several threads (issue 18, found items 6, 7, 15)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

import otelflow
from otelflow.bus.dispatcher import MAX_LAG_S, Dispatcher
from otelflow.bus.queue import EventBus
from otelflow.events.model import TaskStarted, now_ns
from tests.conftest import read_lines


def _wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


# -- item 6: the bus holds at most max_lag seconds of dispatcher work ---------------------------


def test_the_bus_bound_follows_the_dispatchers_measured_rate():
    bus = EventBus(65536)
    tree = SimpleNamespace(routes={})  # only the rate measurement is exercised
    disp = Dispatcher(bus, tree=tree, recorder=None, jsonl=None)  # type: ignore[arg-type]
    disp._measure(1024 / 20_000)  # 20 000 items/s
    assert bus.limit == int(20_000 * MAX_LAG_S)
    for _ in range(50):
        disp._measure(1024 / 1_000_000)  # it got fast: the bound rises, but never past maxsize
    assert bus.limit == 65536
    disp._measure(1024 / 100.0)
    for _ in range(50):
        disp._measure(1024 / 100.0)  # very slow: never below 1024
    assert bus.limit == 1024


def test_put_throttles_at_the_bound_in_force_not_at_maxsize():
    bus = EventBus(65536, policy="drop")
    bus.set_limit(2000)
    accepted = sum(bus.put(i) for i in range(3000))
    assert accepted == 2000 and bus.dropped == 1000


# -- item 7: throttling is not task time -------------------------------------------------------


class _Gate(SpanProcessor):
    """Stalls the dispatcher (span processors run on it) on the first task span until opened."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.open = threading.Event()

    def on_end(self, span: ReadableSpan) -> None:
        if not self.open.is_set():
            self.reached.set()
            self.open.wait(60)

    def shutdown(self) -> None:
        self.open.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _blocked_in_put(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident)  # type: ignore[arg-type]
    while frame is not None:
        if frame.f_code.co_name == "_put_slow":
            return True
        frame = frame.f_back
    return False


def test_a_throttled_producer_wait_is_never_inside_a_tasks_execution(tmp_path: Path):
    gate = _Gate()
    tel = otelflow.start_telemetry(
        checkpoint_path=tmp_path, resource_poll_interval=0, queue_size=1024, span_processors=[gate], environ={}
    )
    tr = otelflow.tracker("x")
    tr.completed(tr.created("first", "w"))
    assert gate.reached.wait(60)  # the dispatcher is now stalled on the first span
    bus = tel.bus
    assert bus is not None
    tr.created("x", "w")
    i = 0
    while len(bus) < bus.limit:  # fill the bus exactly: the next put must wait
        tr.created(f"fill-{i}", "w")
        i += 1

    def run_task() -> None:
        tr.started("x")  # the bus is full: otelflow makes this producer wait here
        tr.completed("x")

    t = threading.Thread(target=run_task)
    t.start()
    try:
        _wait_for(lambda: _blocked_in_put(t))
        released_at = now_ns()
    finally:
        gate.open.set()  # never leave the dispatcher stalled
    t.join(60)
    summary = tel.stop()
    assert summary["dropped"]["throttled_s"] > 0
    assert summary["dropped"]["events"] == 0
    spans = read_lines(tel.run_dir, "span")
    (span,) = [s for s in spans if s.get("kind") == "task" and s["attributes"]["otelflow.task.id"] == "x"]
    # The wait ended only after the dispatcher was released: the task started after it.
    times = dict(span["events"])
    # The wait ended only after the dispatcher was released: execution (started ->
    # completed) began after it, so none of otelflow's waiting is in it.
    assert times["TaskStarted"] >= released_at
    assert times["TaskCompleted"] >= times["TaskStarted"]


def test_a_start_measured_long_ago_keeps_its_time_after_a_throttled_put():
    bus = EventBus(1024)
    bus.set_limit(1024)
    for i in range(1024):
        bus.put(i)
    old = now_ns() - 10**9
    ev = TaskStarted(event_time=old, emit_time=now_ns(), task_id="w")
    drained = threading.Event()

    def drain() -> None:
        while len(bus.queue) > 100:
            bus.queue.popleft()
        drained.set()

    threading.Timer(0.01, drain).start()
    assert bus.put(ev)
    assert ev.event_time == old  # a worker-side time is the truth, waited or not


# -- item 15: one scope object, several threads -------------------------------------------------


def test_one_scope_object_entered_from_several_threads_keeps_each_entry_apart(tmp_path: Path):
    tel = otelflow.start_telemetry(checkpoint_path=tmp_path, resource_poll_interval=0, environ={})
    wf = otelflow.workflow_scope("shared")
    n = 8
    entered = [threading.Event() for _ in range(n)]
    exited = [threading.Event() for _ in range(n)]
    all_in = threading.Barrier(n)
    seen: dict[int, tuple[str, object, int]] = {}
    tr = otelflow.tracker("threads")

    def worker(i: int) -> None:
        if i:
            assert entered[i - 1].wait(30)  # enter in order 0, 1, ... 7
        with wf as wf_id:
            entered[i].set()
            all_in.wait(30)  # all eight entries of the one object are open at once
            tr.completed(tr.created(f"task-{i}", "w"))
            if i:
                assert exited[i - 1].wait(30)  # ... and exit in the same order: 0 first
            exit_time = now_ns()
        seen[i] = (wf_id, otelflow.current_scope(), exit_time)
        exited[i].set()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    tel.stop()
    assert len(seen) == n
    ids = {v[0] for v in seen.values()}
    assert len(ids) == n
    assert all(v[1] is None for v in seen.values())  # every thread is back outside the scope
    events = read_lines(tel.run_dir, "event")
    created = {e["task_id"]: e["workflow_id"] for e in events if e["type"] == "TaskCreated"}
    assert all(created[f"task-{i}"] == seen[i][0] for i in range(n))
    # Each thread's exit ended its own workflow: none ended before its thread left it.
    ended = {e["workflow_id"]: e["event_time"] for e in events if e["type"] == "WorkflowEnded"}
    assert all(ended[seen[i][0]] >= seen[i][2] for i in range(n))
    wf_spans = [s for s in read_lines(tel.run_dir, "span") if s.get("kind") == "workflow"]
    assert len(wf_spans) == n and all(s["status"] == "completed" for s in wf_spans)
