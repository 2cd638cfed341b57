"""The event bus: a bounded, lock-free-on-the-fast-path queue in front of one dispatcher.

``put()`` is what every producer calls. On the fast path it is a ``deque.append`` (atomic
under the GIL) and a length check: no lock, no I/O, no allocation beyond the deque slot.
When the bus holds ``maxsize`` items (a producer outrunning the dispatcher for a long
time), the ``queue_full`` policy applies:

* ``"wait"`` (default, lossless): the producer sleeps in short slices until the
  dispatcher has drained the bus below three quarters of ``maxsize``. Total throttled
  time is counted and reported in ``summary()``. After ``max_wait`` seconds without
  progress (a wedged dispatcher) the item is dropped instead.
* ``"drop"``: the item is dropped.

Drops are counted, reported in ``summary()`` and the run's JSONL, and warned about once.

The bound is also one of *time*: the dispatcher measures how many items it handles per
second and lowers :attr:`EventBus.limit` (never below 1024, never above ``maxsize``) so
that what the bus holds is at most ``max_lag`` seconds of its work. An accepted event
therefore reaches the JSONL file within ``max_lag`` plus the flush interval, even in a
flood — that is the crash promise.

Throttling never counts as task time: an event stamped "now" (its ``event_time`` equals
its ``emit_time``) that had to wait is re-stamped when it is accepted if it is a
``TaskStarted`` (the task starts after otelflow's wait), and keeps its time otherwise (a
task ends before otelflow's wait). The same holds for a start the producer measured itself
less than a millisecond before putting it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import msgspec

from otelflow._warn import warn_visibly
from otelflow.events.model import TaskStarted

_log = logging.getLogger("otelflow")

__all__ = ["EventBus"]


class EventBus:
    """Bounded multi-producer, single-consumer queue of events and internal items."""

    __slots__ = (
        "_append",
        "_closed",
        "_consumer_ident",
        "_lock",
        "_low_water",
        "_max_wait",
        "_warned",
        "dropped",
        "limit",
        "maxsize",
        "policy",
        "queue",
        "throttled_ns",
        "wake",
    )

    def __init__(self, maxsize: int = 65536, policy: str = "wait", max_wait: float = 30.0) -> None:
        self.queue: deque[Any] = deque()
        self._append = self.queue.append
        self.maxsize = maxsize
        #: The bound in force now: ``maxsize``, or less while the dispatcher is slow
        #: (see :meth:`set_limit`). The fast path compares against it.
        self.limit = maxsize
        self.policy = policy
        self._low_water = maxsize * 3 // 4
        self._max_wait = max_wait
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._warned = False
        self._consumer_ident: int | None = None
        self.dropped = 0
        self.throttled_ns = 0

    def put(self, item: Any) -> bool:
        """Enqueue ``item``. O(1), thread-safe, never raises. Returns False if it was dropped."""
        if len(self.queue) < self.limit and not self._closed:
            self._append(item)
            return True
        return self._put_slow(item)

    def offer(self, item: Any) -> bool:
        """Enqueue ``item`` if there is room, else drop and count it: never waits.

        Room is ``maxsize``, not the time bound :attr:`limit`: what cannot wait (a log
        record) is dropped only at the hard bound, not whenever producers are throttled.
        """
        if len(self.queue) < self.maxsize and not self._closed:
            self._append(item)
            return True
        return self._drop(f"the bus is full ({self.maxsize} items)")

    def claim_consumer(self) -> None:
        """Mark the calling thread as the one dispatcher (it never waits on a full bus)."""
        self._consumer_ident = threading.get_ident()

    def put_call(self, item: Any) -> None:
        """Enqueue a control item (a flush barrier) regardless of bound or close, and wake the dispatcher."""
        self._append(item)
        self.wake.set()

    def discard_leftover(self) -> int:
        """After close(): drop what raced in and can no longer be delivered; count and return it."""
        if not self._closed or not self.queue:
            return 0
        with self._lock:
            n = len(self.queue)
            self.queue.clear()
            self.dropped += n
        return n

    def set_limit(self, items: int) -> None:
        """Set the bound in force (dispatcher thread): clamped to [1024, ``maxsize``]."""
        limit = max(min(1024, self.maxsize), min(self.maxsize, items))
        self.limit = limit
        self._low_water = limit * 3 // 4

    def on_consumer_thread(self) -> bool:
        """True when called from the dispatcher thread itself."""
        return threading.get_ident() == self._consumer_ident

    def reset_after_fork(self) -> None:
        """In a forked child: no dispatcher drains this bus, so close it with fresh state."""
        self.queue = deque()
        self._append = self.queue.append
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._consumer_ident = None
        self._closed = True

    def put_internal(self, item: Any) -> bool:
        """Enqueue one of otelflow's own low-rate items (session events, metric snapshots,
        resource samples) regardless of the bound: a producer flood must not cost the run
        its final metrics or its SessionEnded. Dropped (and counted) only after close()."""
        if self._closed:
            return self._drop("the telemetry was stopped")
        self._append(item)
        return True

    def _put_slow(self, item: Any) -> bool:
        if self._closed:
            return self._drop("the telemetry was stopped")
        if self.policy == "wait" and threading.get_ident() != self._consumer_ident:
            self.wake.set()
            start = time.monotonic_ns()
            deadline = start + int(self._max_wait * 1e9)
            while len(self.queue) > self._low_water and not self._closed:
                time.sleep(0.0005)
                if time.monotonic_ns() > deadline:
                    with self._lock:
                        self.throttled_ns += time.monotonic_ns() - start
                    return self._drop(f"the dispatcher made no progress for {self._max_wait:g} s")
            with self._lock:
                self.throttled_ns += time.monotonic_ns() - start
            if self._closed:
                return self._drop("the telemetry was stopped")
            _restamp(item)
            self._append(item)
            return True
        if threading.get_ident() == self._consumer_ident:
            self._append(item)  # the dispatcher itself never waits on itself
            return True
        return self._drop(f"the bus is full ({self.maxsize} items)")

    def _drop(self, why: str) -> bool:
        with self._lock:
            self.dropped += 1
            warn = not self._warned
            self._warned = True
        if warn:
            warn_visibly(
                _log,
                "otelflow dropped an event because %s; drops are counted in summary()"
                " — raise OTELFLOW_QUEUE_SIZE or use OTELFLOW_QUEUE_FULL=wait.",
                why,
            )
        return False

    def close(self) -> None:
        """Refuse new items (they are dropped and counted). Queued items stay for draining."""
        self._closed = True
        self.wake.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self.queue)


def _restamp(item: Any) -> None:
    """After a throttled wait: a task start stamped "now" moves to now, so otelflow's own
    wait is never counted as the task's execution time."""
    # Stamped by the producer just before it put the event (a worker-side time measured
    # long before is kept as it is).
    if type(item) is TaskStarted and item.event_time >= item.emit_time - 1_000_000:
        now = time.time_ns()
        setf = msgspec.structs.force_setattr
        setf(item, "event_time", now)
        setf(item, "emit_time", now)
