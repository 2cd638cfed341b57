"""The bus and dispatcher: lossless under concurrency, isolated subscribers, never raising."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import otelflow
from otelflow.bus.queue import EventBus
from otelflow.events import model
from tests.conftest import read_lines

Tick = otelflow.define_event("test.Tick", thread=int, n=int)


def test_eight_threads_fifty_thousand_events_each_none_lost_or_duplicated(tmp_path):
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path), resource_poll_interval=0, queue_size=4096, environ={}
    )
    errors = []

    def produce(i):
        try:
            for n in range(50_000):
                otelflow.emit(Tick(thread=i, n=n, event_time=model.now_ns()))
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = tel.stop()
    assert errors == []
    assert summary["dropped"]["events"] == 0
    seen = Counter()
    ids = set()
    for f in tel.run_dir.glob("*.jsonl"):
        with open(f, "rb") as fh:
            for raw in fh:
                if b'"test.Tick"' not in raw:
                    continue
                import json

                rec = json.loads(raw)
                seen[rec["thread"]] += 1
                ids.add(rec["event_id"])
    assert seen == dict.fromkeys(range(8), 50000)
    assert len(ids) == 400_000


def test_slow_and_raising_subscribers_do_not_delay_or_lose_others(capture, caplog_otelflow):
    got_fast = []
    slow_seen = []

    def fast(ev):
        got_fast.append(ev.n)

    def slow(ev):
        time.sleep(0.2)
        slow_seen.append(ev.n)

    def bad(ev):
        raise RuntimeError("subscriber bug")

    capture.telemetry.subscribe(slow, Tick)
    capture.telemetry.subscribe(bad, Tick)
    capture.telemetry.subscribe(fast, Tick)
    for n in range(20):
        otelflow.emit(Tick(thread=0, n=n))
    deadline = time.monotonic() + 2
    while len(got_fast) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got_fast == list(range(20))
    # The fast one had everything while the slow one (0.2 s per event) was still busy.
    assert len(slow_seen) < 20
    summary = capture.telemetry.stop(timeout=10)
    assert slow_seen == list(range(20))  # drained at stop, in order
    assert summary["dropped"]["subscriber_errors"] == 20
    assert "subscriber bug" in caplog_otelflow.text


def test_losses_of_an_unsubscribed_subscriber_stay_counted(capture):
    def bad(ev):
        raise RuntimeError("subscriber bug")

    sub = capture.telemetry.subscribe(bad, Tick)
    for n in range(3):
        otelflow.emit(Tick(thread=0, n=n))
    capture.telemetry.flush()
    assert capture.telemetry.unsubscribe(sub)
    summary = capture.telemetry.stop(timeout=10)
    assert summary["dropped"]["subscriber_errors"] == 3


def test_async_subscriber_runs_on_its_loop(tmp_path):
    async def main():
        tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={})
        loop = asyncio.get_running_loop()
        seen = []

        async def on_event(ev):
            assert asyncio.get_running_loop() is loop
            seen.append(ev.n)

        tel.subscribe(on_event, Tick)
        for n in range(5):
            otelflow.emit(Tick(thread=1, n=n))
        for _ in range(100):
            if len(seen) == 5:
                break
            await asyncio.sleep(0.01)
        await tel.astop()
        return seen

    assert asyncio.run(main()) == list(range(5))


def test_emit_never_raises_on_bad_input(capture, caplog_otelflow):
    assert otelflow.emit("no.SuchEvent") is False
    assert otelflow.emit(object()) is False  # type: ignore[arg-type]
    assert otelflow.emit("test.Tick", bogus=1) is False
    assert otelflow.emit("test.Tick", thread=1, n=2) is True
    summary = capture.telemetry.stop()
    assert summary["dropped"]["invalid_emits"] == 3
    assert "define_event" in caplog_otelflow.text  # the warning names the fix


def test_emit_without_telemetry_is_a_noop():
    assert otelflow.emit(Tick(thread=0, n=0)) is False
    assert otelflow.stop() is None
    assert otelflow.summary() is None


def test_drop_policy_counts_what_it_drops():
    bus = EventBus(maxsize=4, policy="drop")
    accepted = [bus.put(i) for i in range(10)]
    assert accepted.count(True) == 4
    assert bus.dropped == 6


def test_wait_policy_throttles_instead_of_dropping():
    bus = EventBus(maxsize=8, policy="wait", max_wait=5)
    done = threading.Event()

    def consumer():
        while not done.is_set() or bus.queue:
            while bus.queue:
                bus.queue.popleft()
            time.sleep(0.001)

    t = threading.Thread(target=consumer)
    t.start()
    for i in range(1000):
        assert bus.put(i)
    done.set()
    t.join()
    assert bus.dropped == 0
    assert bus.throttled_ns > 0


def test_closed_bus_drops_and_counts():
    bus = EventBus(maxsize=8)
    bus.close()
    assert bus.put(1) is False
    assert bus.dropped == 1


def test_unserializable_attribute_is_sanitized_not_fatal(capture, caplog_otelflow):
    Weird = otelflow.define_event("test.Weird", payload=str)
    assert not otelflow.emit(Weird(payload=object()))  # wrong type at run time: refused, counted
    trk = otelflow.tracker()
    tid = trk.created(None, "attrs", attributes={"obj": object()})  # type: ignore[dict-item]
    trk.started(tid)
    trk.completed(tid)
    summary = capture.telemetry.stop()
    assert summary["dropped"]["invalid_emits"] == 1
    assert summary["dropped"]["invalid_arguments"] == 1
    assert not [e for e in capture.lines("event") if e["type"] == "test.Weird"]
    created = next(e for e in capture.lines("event") if e["type"] == "TaskCreated")
    assert created["attributes"]["obj"].startswith("<object object")
    assert "Expected `str`, got `object`" in caplog_otelflow.text


def test_summary_reports_drops_and_throttling_after_stop(tmp_path):
    """Regression: an empty bus is falsy (it has __len__); its counts must still be reported."""
    dropping = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path), resource_poll_interval=0, queue_size=1024, queue_full="drop", environ={}
    )
    for n in range(50_000):
        otelflow.emit(Tick(thread=0, n=n))
    summary = dropping.stop()
    assert summary["dropped"]["events"] == dropping.bus.dropped > 0
    lines = sum(1 for e in read_lines(dropping.run_dir, "event") if e["type"] == "test.Tick")
    assert lines + summary["dropped"]["events"] == 50_000  # every event written or counted

    waiting = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path), resource_poll_interval=0, queue_size=1024, environ={}
    )
    for n in range(50_000):
        otelflow.emit(Tick(thread=0, n=n))
    summary = waiting.stop()
    assert summary["dropped"]["events"] == 0
    assert summary["dropped"]["throttled_s"] == round(waiting.bus.throttled_ns / 1e9, 6) > 0
