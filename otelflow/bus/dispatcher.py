"""The dispatcher: one named daemon thread that drains the bus and fans out.

For each event, in order: the trace tree (spans and metric aggregates) gives the JSONL
line header, the JSONL sink appends the line, and each subscriber's queue gets the event.
Events the tree derives (``TaskResolved`` when a task's last upstream finishes) follow
the event that caused them. Anything a handler raises is logged once per kind and
counted: the dispatcher itself never dies from a bad event. While busy it measures its
own rate and bounds the bus to ``max_lag`` seconds of its work, so an accepted event
waits at most that long for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from otelflow._warn import warn_visibly
from otelflow.events.model import Event, ResourceUpdate
from otelflow.sinks.jsonl import MetricsItem, SpanItem, metric_lines, user_span_line

if TYPE_CHECKING:
    from otelflow.bus.queue import EventBus
    from otelflow.bus.subscribers import Subscriber
    from otelflow.metrics.recorder import MetricRecorder
    from otelflow.sinks.jsonl import JsonlWriter
    from otelflow.tracing.tree import TraceTree

_log = logging.getLogger("otelflow")
_TICK_EVERY = 1024
#: Default longest time (s) an accepted event waits on the bus for the dispatcher: with
#: the 0.25 s flush interval, a line is on disk within ~0.35 s of being accepted.
MAX_LAG_S = 0.1
#: The rate (items/s) assumed until the first batch is measured: a slow machine's, so the
#: bus starts small. Starting at the full bound let a flood producer queue ~0.5 s of work
#: before the first measurement, and a SIGKILL then lost tasks older than the 0.5 s promise.
_START_RATE = 50_000


class Call:
    """Run ``fn`` on the dispatcher thread, in order with the events; then set ``done``."""

    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], Any] | None = None) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class Dispatcher:
    """Drains ``bus`` on its own thread into the tree, the JSONL sink and subscribers."""

    def __init__(
        self,
        bus: EventBus,
        tree: TraceTree,
        recorder: MetricRecorder,
        jsonl: JsonlWriter | None,
        idle_wait: float = 0.05,
        max_lag: float = MAX_LAG_S,
    ) -> None:
        self.bus = bus
        self.tree = tree
        self.recorder = recorder
        self.jsonl = jsonl
        self.subscribers: tuple[Subscriber, ...] = ()
        self._routes = tree.routes
        self._sub_lock = threading.Lock()
        self._idle_wait = idle_wait
        self._max_lag = max_lag
        self._rate = 0.0  # items per second while busy (moving average)
        bus.set_limit(int(_START_RATE * max_lag))  # raised as soon as a batch is measured
        self._exit = False
        self.internal_errors = 0
        self._warned: set[str] = set()
        self.events_processed = 0
        self._thread = threading.Thread(target=self._run, name="otelflow-dispatcher", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def exit(self, timeout: float | None = None) -> bool:
        """Process everything queued, then end the thread. Returns True if it ended."""
        self._exit = True
        self.bus.wake.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def add_subscriber(self, sub: Subscriber) -> None:
        # Copy-on-write tuple: the dispatcher iterates it without a lock.
        with self._sub_lock:
            self.subscribers = (*self.subscribers, sub)

    def remove_subscriber(self, sub: Subscriber) -> bool:
        with self._sub_lock:
            subs = tuple(s for s in self.subscribers if s is not sub)
            found = len(subs) != len(self.subscribers)
            self.subscribers = subs
        return found

    # -- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        bus = self.bus
        bus.claim_consumer()
        queue = bus.queue
        popleft = queue.popleft
        handle = self._handle
        wake = bus.wake
        processed = 0
        clock = time.monotonic
        while True:
            n = 0
            batch_start = clock()
            while queue:
                item = popleft()
                try:
                    handle(item)
                except Exception as exc:  # noqa: BLE001 - never die from one bad item
                    self._internal_error(exc, item)
                n += 1
                if n == _TICK_EVERY:
                    processed += n
                    n = 0
                    now = clock()
                    self._measure(now - batch_start)
                    batch_start = now
                    self._tick()
            processed += n
            self.events_processed = processed
            self._tick()
            if self._exit and not queue:
                break
            wake.wait(self._idle_wait)
            wake.clear()

    def _measure(self, seconds: float) -> None:
        """One full batch took ``seconds``: bound the bus to ``max_lag`` seconds of work."""
        if seconds <= 0:
            return
        rate = _TICK_EVERY / seconds
        self._rate = rate if not self._rate else 0.8 * self._rate + 0.2 * rate
        self.bus.set_limit(int(self._rate * self._max_lag))

    def _tick(self) -> None:
        if self.jsonl is not None:
            try:
                self.jsonl.tick(time.monotonic())
            except Exception as exc:  # noqa: BLE001
                self._internal_error(exc, None)

    def _handle(self, item: Any) -> None:
        route = self._routes.get(type(item))
        if route is not None:  # a task or scope event: the hot path, inlined
            header = route(item)
            jsonl = self.jsonl
            if jsonl is not None:
                jsonl.write_event(item, header)
            subs = self.subscribers
            if subs:
                for sub in subs:
                    sub.offer(item)
            if self.tree.derived:
                self._write_derived(jsonl, subs)
        elif isinstance(item, Event):
            self._event(item)
        elif type(item) is SpanItem:
            if self.jsonl is not None:
                self.jsonl.write_struct(user_span_line(item.span))
        elif type(item) is MetricsItem:
            if self.jsonl is not None:
                for line in metric_lines(item.data):
                    self.jsonl.write_struct(line)
        elif type(item) is Call:
            try:
                if item.fn is not None:
                    item.result = item.fn()
                if self.jsonl is not None:
                    self.jsonl.flush()
            except BaseException as exc:  # noqa: BLE001 - handed back to the waiter
                item.error = exc
            finally:
                item.done.set()
        else:
            raise TypeError(f"unexpected item on the otelflow bus: {type(item).__name__}")

    def _event(self, ev: Event) -> None:
        tree = self.tree
        header = tree.handle(ev)
        if type(ev) is ResourceUpdate:
            self.recorder.resource_update(ev)
        jsonl = self.jsonl
        if jsonl is not None:
            jsonl.write_event(ev, header)
        subs = self.subscribers
        if subs:
            for sub in subs:
                sub.offer(ev)
        if tree.derived:
            self._write_derived(jsonl, subs)

    def _write_derived(self, jsonl: JsonlWriter | None, subs: tuple[Subscriber, ...]) -> None:
        """Write and fan out the TaskResolved events the tree derived (its state already
        applied), after the event that caused them."""
        tree = self.tree
        derived = tree.derived
        tree.derived = []
        for d, d_header in derived:
            if jsonl is not None:
                jsonl.write_event(d, d_header)
            if subs:
                for sub in subs:
                    sub.offer(d)

    def _internal_error(self, exc: BaseException, item: Any) -> None:
        self.internal_errors += 1
        key = f"{type(exc).__name__}:{type(item).__name__}"
        if key not in self._warned and len(self._warned) < 100:
            self._warned.add(key)
            warn_visibly(
                _log,
                "otelflow could not process a %s: %s: %s. It was skipped and counted in "
                "summary()['dropped']['internal_errors']; please report this.",
                type(item).__name__,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
