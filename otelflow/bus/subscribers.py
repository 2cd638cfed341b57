"""User subscribers: callbacks that receive events, each isolated from the others.

Each subscriber gets its own bounded queue and its own named daemon thread, so a callback
that raises or sleeps delays only itself: the dispatcher hands events over with an
``append`` and moves on. Async callbacks (``async def``) run on the event loop that was
running when they subscribed, one at a time and in order.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from otelflow._warn import warn_visibly
from otelflow.errors import ConfigError
from otelflow.events.model import Event

_log = logging.getLogger("otelflow")

__all__ = ["Subscriber"]


class Subscriber:
    """Delivers events to one callback on its own thread.

    Args:
        callback: ``callback(event)``; a coroutine function is awaited on ``loop``.
        event_types: Deliver only these event classes (and subclasses); None = all.
        maxsize: Undelivered events kept before new ones are dropped (and counted).
    """

    def __init__(
        self,
        callback: Callable[[Event], Any],
        event_types: tuple[type[Event], ...] | None = None,
        maxsize: int = 100_000,
    ) -> None:
        if not callable(callback):
            raise ConfigError(f"subscribe() needs a callable, not {callback!r}.")
        self.callback = callback
        self.event_types = event_types
        self.is_async = inspect.iscoroutinefunction(callback)
        self.loop: asyncio.AbstractEventLoop | None = None
        if self.is_async:
            try:
                self.loop = asyncio.get_running_loop()
            except RuntimeError:
                raise ConfigError(
                    f"Async subscriber {_name(callback)} needs a running event loop: call "
                    "subscribe() from inside the loop (e.g. in an async function)."
                ) from None
        self.maxsize = maxsize
        self.delivered = 0
        self.dropped = 0
        self.errors = 0
        self._queue: deque[Event] = deque()
        self._wake = threading.Event()
        self._idle = True
        self._stopping = False
        self._dead = False
        self._thread = threading.Thread(
            target=self._run, name=f"otelflow-subscriber-{_name(callback)}", daemon=True
        )
        self._thread.start()

    def offer(self, event: Event) -> None:
        """Queue ``event`` for delivery (dispatcher thread; never blocks)."""
        types = self.event_types
        if types is not None and not isinstance(event, types):
            return
        if self._dead or len(self._queue) >= self.maxsize:
            self.dropped += 1
            if self.dropped == 1:
                warn_visibly(
                    _log,
                    "otelflow subscriber %s is not keeping up (%d events waiting); its further "
                    "events are dropped and counted in summary()['dropped'].",
                    _name(self.callback),
                    len(self._queue),
                )
            return
        self._queue.append(event)
        if self._idle:
            self._wake.set()

    def _run(self) -> None:
        queue = self._queue
        while True:
            while queue:
                event = queue.popleft()
                self._deliver(event)
            if self._stopping and not queue:
                return
            self._idle = True
            self._wake.wait(0.05)
            self._wake.clear()
            self._idle = False

    def _deliver(self, event: Event) -> None:
        if self._dead:
            self.dropped += 1
            return
        try:
            if self.is_async:
                assert self.loop is not None
                if self.loop.is_closed():
                    raise RuntimeError("its event loop is closed")
                fut = asyncio.run_coroutine_threadsafe(self.callback(event), self.loop)
                fut.result()
            else:
                self.callback(event)
            self.delivered += 1
        except RuntimeError as exc:
            if self.is_async and self.loop is not None and self.loop.is_closed():
                self._dead = True
                _log.warning(
                    "otelflow async subscriber %s stopped receiving events: %s.",
                    _name(self.callback),
                    exc,
                )
                self.dropped += 1
                return
            self._error(exc)
        except Exception as exc:  # noqa: BLE001 - user code must never break the pipeline
            self._error(exc)
        except BaseException as exc:  # noqa: BLE001 - SystemExit & co. end this subscriber only
            self._dead = True
            self._error(exc)

    def _error(self, exc: BaseException) -> None:
        self.errors += 1
        if self.errors == 1:
            warn_visibly(
                _log,
                "otelflow subscriber %s raised %s: %s; the pipeline goes on and further "
                "errors are counted in summary().",
                _name(self.callback),
                type(exc).__name__,
                exc,
            )

    def stop(self, deadline: float) -> None:
        """Deliver what is queued until ``deadline`` (``time.monotonic()``), then stop."""
        self._stopping = True
        self._wake.set()
        if threading.current_thread() is not self._thread:  # stop() from inside a callback
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive() or self._queue:
            left = len(self._queue)
            self._queue.clear()
            self.dropped += left
            if left:
                warn_visibly(
                    _log,
                    "otelflow subscriber %s did not finish in time at stop(); %d events were "
                    "not delivered to it.",
                    _name(self.callback),
                    left,
                )


def _name(callback: Any) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)
