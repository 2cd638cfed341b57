"""The live stream's buffer: one bounded ring of events, one cursor per client.

:meth:`EventHub.publish` (the telemetry's dispatcher, or a run-directory follower) puts
an event in a fixed ring and wakes the readers: O(1), never blocks on a client; readers
encode what they send on their own threads. Each client is only a cursor (the last ``seq`` it was sent), so a
slow or stalled client costs no memory: when the ring has moved past its cursor it is
told how many events it missed (a ``gap`` message), and they are counted in
:attr:`EventHub.dropped_for_clients`. Sequence numbers start at 1 and are the SSE event
ids; a client reconnecting with ``Last-Event-ID: n`` resumes at ``n + 1``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import msgspec

__all__ = ["EventHub", "format_sse"]

_KEEPALIVE_S = 15.0


def format_sse(seq: int | None, data: bytes, event: str | None = None) -> bytes:
    """One Server-Sent Events message (``data`` must hold no newline: compact JSON)."""
    head = b""
    if seq is not None:
        head += b"id: %d\n" % seq
    if event is not None:
        head += b"event: " + event.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


class EventHub:
    """A bounded, thread-safe history of events that many clients read.

    Items are events (encoded to JSON on the reading client's thread, so a hub nobody
    reads costs the run one append per event) or already-encoded JSON lines (a run
    directory's). A fixed ring: event ``n`` lives in slot ``(n - 1) % maxlen`` until
    ``maxlen`` newer ones replace it.

    Args:
        maxlen: Most events kept; older ones are gone for clients that had not read them.
        batch: Most events one :meth:`read` returns (keeps the lock short).
    """

    def __init__(self, maxlen: int = 100_000, batch: int = 2048) -> None:
        self.maxlen = max(1, maxlen)
        self._slots: list[object] = [None] * self.maxlen
        self._batch = max(1, batch)
        self._cond = threading.Condition(threading.Lock())
        self._seq = 0
        self._closed = False
        self.dropped_for_clients = 0
        """Events that clients missed because they read slower than the ring turned."""
        self.clients = 0
        """Clients reading now."""

    @property
    def last_seq(self) -> int:
        """The id of the newest event (0 before the first)."""
        return self._seq

    @property
    def closed(self) -> bool:
        """True once the source has ended (the run stopped): readers finish, then end."""
        return self._closed

    def __len__(self) -> int:
        return min(self._seq, self.maxlen)

    def publish(self, item: object) -> int:
        """Append one event (an :class:`~otelflow.events.Event`, or a compact JSON line as
        bytes); returns its id. O(1); never waits for a reader."""
        with self._cond:
            if self._closed:
                return 0
            self._seq = seq = self._seq + 1
            self._slots[(seq - 1) % self.maxlen] = item
            self._cond.notify_all()
            return seq

    def close(self) -> None:
        """No more events: readers get what is left, then the end of the stream."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def read(self, after: int, timeout: float) -> tuple[list[tuple[int, bytes]], int, bool]:
        """Events with id > ``after``, encoded: ``(events, missed, ended)``.

        Waits up to ``timeout`` seconds for one. ``missed`` counts events that were
        already gone from the ring; ``ended`` is True when the hub is closed and nothing
        newer is left.
        """
        with self._cond:
            if self._seq <= after and not self._closed:
                self._cond.wait(timeout)
            last = self._seq
            if last <= after:
                return [], 0, self._closed
            first = max(1, last - self.maxlen + 1)
            start = max(after + 1, first)
            missed = start - after - 1
            if missed:
                self.dropped_for_clients += missed
            stop = min(last, start + self._batch - 1)
            slots, n = self._slots, self.maxlen
            items = [(seq, slots[(seq - 1) % n]) for seq in range(start, stop + 1)]
        return [(seq, _encoded(item)) for seq, item in items], missed, False

    def sse(self, last_event_id: int | str | None = None, keepalive: float = _KEEPALIVE_S,
            batch_bytes: int = 64 * 1024) -> Iterator[bytes]:
        """The stream as SSE chunks from ``last_event_id`` on (None: from the first event).

        Blocking iterator: one chunk per batch of events, a comment line every
        ``keepalive`` seconds of silence, an ``end`` message when the hub closes. Feed it
        to any HTTP framework's streaming response (see docs/live.md).
        """
        after = _parse_id(last_event_id)
        if after > self._seq:
            after = 0  # an id from another server (or run): start from the beginning
        with self._cond:
            self.clients += 1
        try:
            yield b"retry: 2000\n\n"
            quiet_since = time.monotonic()
            while True:
                items, missed, ended = self.read(after, min(keepalive, 1.0))
                if missed:
                    yield format_sse(None, b'{"missed":%d}' % missed, "gap")
                if items:
                    chunk = bytearray()
                    for seq, data in items:
                        chunk += format_sse(seq, data)
                        if len(chunk) >= batch_bytes:
                            yield bytes(chunk)
                            chunk.clear()
                    if chunk:
                        yield bytes(chunk)
                    after = items[-1][0]
                    quiet_since = time.monotonic()
                elif ended:
                    yield format_sse(None, b"{}", "end")
                    return
                elif time.monotonic() - quiet_since >= keepalive:
                    yield b": keepalive\n\n"
                    quiet_since = time.monotonic()
        finally:
            with self._cond:
                self.clients -= 1


_encoder = msgspec.json.Encoder()


def _encoded(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    try:
        return _encoder.encode(item)
    except (TypeError, msgspec.EncodeError, OverflowError, ValueError):
        return msgspec.json.encode(item, enc_hook=repr)


def _parse_id(value: int | str | None) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return max(0, value)
    try:
        return max(0, int(value.strip()))
    except ValueError:
        return 0  # a foreign id: start from the beginning
