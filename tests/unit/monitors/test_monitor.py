"""The monitor's thread: cadence, prompt stop, nothing emitted after stop, failures contained."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any

import pytest

from otelflow.errors import ConfigError
from otelflow.events.model import Event, ResourceUpdate
from otelflow.monitors import ResourceMonitor
from otelflow.monitors.base import THREAD_NAME


class Recorder:
    """An emit callback that records events and notices any call after ``closed`` is set."""

    def __init__(self, delay: float = 0.0) -> None:
        self.events: list[Event] = []
        self.closed = False
        self.late_calls = 0
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if self.closed:
            self.late_calls += 1
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.events.append(event)

    def samples(self) -> int:
        with self.lock:
            return sum(1 for e in self.events if isinstance(e, ResourceUpdate) and e.scope == "node")


class Boom:
    name = "boom"

    def __init__(self) -> None:
        self.calls = 0

    def sample(self, *, node: str, session_id: str | None, event_time: int) -> list[ResourceUpdate]:
        self.calls += 1
        raise RuntimeError("sensor unplugged")


def _wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _monitor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def _node_times(rec: Recorder) -> list[int]:
    with rec.lock:
        return sorted(e.event_time for e in rec.events if isinstance(e, ResourceUpdate) and e.scope == "node")


def test_emits_immediately_then_every_interval() -> None:
    # Immediate: with a 60 s interval the first sample comes at start, not an interval later
    # (the 10 s deadline is far from both, so a loaded machine's stalls cannot decide it).
    first = Recorder()
    m = ResourceMonitor(60.0, first, gpu=False, session_id="s")
    m.start()
    try:
        assert _wait_for(lambda: first.samples() >= 1)
    finally:
        m.stop()
    assert first.samples() == 1
    # Every interval: the samples' own times. The monitor waits a whole interval between two
    # (the floor); stalls only lengthen gaps, so the shortest of four is near 0.1 s unless the
    # cadence itself is wrong (a 0.5 s ceiling: five intervals).
    rec = Recorder()
    m = ResourceMonitor(0.1, rec, gpu=False, session_id="s")
    m.start()
    try:
        assert _wait_for(lambda: rec.samples() >= 5)
    finally:
        m.stop()
    times = _node_times(rec)
    gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(times)]
    assert 0.09 <= min(gaps) < 0.5, gaps
    assert all(isinstance(e, ResourceUpdate) and e.session_id == "s" for e in first.events + rec.events)


def test_start_is_idempotent_and_uses_one_named_daemon_thread() -> None:
    m = ResourceMonitor(0.1, Recorder(), gpu=False)
    m.start()
    m.start()
    try:
        threads = _monitor_threads()
        assert len(threads) == 1 and threads[0].daemon
        assert m.running
    finally:
        m.stop()
        m.stop()
    assert not m.running
    assert _monitor_threads() == []


def test_stop_is_prompt_and_nothing_is_emitted_after_it_returns() -> None:
    rec = Recorder(delay=0.002)
    m = ResourceMonitor(10.0, rec, gpu=False)
    m.start()
    assert _wait_for(lambda: rec.samples() >= 1)
    t0 = time.monotonic()
    m.stop()
    rec.closed = True
    # A prompt stop takes ms; one that waited out the 10 s interval would hit stop()'s own
    # 5 s join timeout, so the ceiling sits halfway to that.
    assert time.monotonic() - t0 < 2.5
    count = len(rec.events)
    time.sleep(0.2)
    assert len(rec.events) == count
    assert rec.late_calls == 0


def test_stop_during_a_burst_of_emits_stops_them() -> None:
    rec = Recorder(delay=0.01)
    for _ in range(5):
        m = ResourceMonitor(0.01, rec, gpu=False)
        m.start()
        time.sleep(0.03)
        m.stop()
        rec.closed = True
        time.sleep(0.03)
        assert rec.late_calls == 0
        rec.closed = False


def test_can_restart_after_stop() -> None:
    rec = Recorder()
    m = ResourceMonitor(0.05, rec, gpu=False)
    m.start()
    m.stop()
    before = rec.samples()
    m.start()
    try:
        assert _wait_for(lambda: rec.samples() > before)
    finally:
        m.stop()


def test_emit_that_raises_does_not_kill_the_thread(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[Event] = []

    def bad_emit(event: Event) -> None:
        calls.append(event)
        raise ValueError("bus is unhappy")

    caplog.set_level(logging.DEBUG, logger="otelflow")
    m = ResourceMonitor(0.05, bad_emit, gpu=False)
    m.start()
    try:
        assert _wait_for(lambda: len(calls) >= 9)  # three samples of three updates
        assert m.running
    finally:
        m.stop()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "emit raised" in warnings[0].getMessage()


def test_sampler_that_raises_is_logged_once_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    boom = Boom()
    m = ResourceMonitor(60.0, lambda _e: None, gpu=False, samplers=[boom])
    caplog.set_level(logging.DEBUG, logger="otelflow")
    for _ in range(3):
        updates = m.sample_once()
        assert {u.scope for u in updates} == {"node", "process"}
    assert boom.calls == 3
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "'boom'" in warnings[0].getMessage()


def test_stop_from_inside_emit_does_not_deadlock() -> None:
    holder: dict[str, ResourceMonitor] = {}
    calls: list[Event] = []

    def emit(event: Event) -> None:
        calls.append(event)
        holder["m"].stop()

    m = ResourceMonitor(0.05, emit, gpu=False)
    holder["m"] = m
    m.start()
    assert _wait_for(lambda: not m.running)
    assert len(calls) == 1


@pytest.mark.parametrize("interval", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_bad_interval_is_a_config_error(interval: Any) -> None:
    with pytest.raises(ConfigError, match="interval"):
        ResourceMonitor(interval, lambda _e: None, gpu=False)
