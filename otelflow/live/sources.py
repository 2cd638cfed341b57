"""What feeds an :class:`~otelflow.live.hub.EventHub`: a running telemetry, or a run directory.

* :func:`attach` taps a telemetry in this process: the dispatcher puts each event in the
  hub's ring (one O(1) append); each client encodes what it sends (as the JSONL line has
  it: ``type``, ids, times, fields) on its own thread, so the live view costs the run
  almost nothing and a client, however slow, cannot hold it up. The hub closes when the
  telemetry stops.
* :class:`RunFollower` follows a run directory written by another process (or replays a
  finished one): it reads each ``*.jsonl`` file's new complete lines every
  ``poll`` seconds and publishes the ``event`` and ``log`` lines; files already there
  when it starts are merged in time order first. It ends when ``run.json`` says the run
  is no longer running and no file grew.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from otelflow.live.hub import EventHub

if TYPE_CHECKING:
    from otelflow.session import Telemetry

__all__ = ["RunFollower", "attach", "tap"]

_log = logging.getLogger("otelflow")
_WANTED = (b'"section":"event"', b'"section":"log"')


class _HubTap:
    """Hands each event to a hub on the dispatcher thread (one O(1) append, no thread of its
    own); closes the hub when the telemetry stops. Duck-types what the dispatcher and
    ``stop()`` use of a :class:`~otelflow.bus.subscribers.Subscriber`."""

    dropped = 0
    errors = 0

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self.offer = hub.publish

    def stop(self, deadline: float) -> None:
        self.hub.close()


def attach(telemetry: Telemetry | None = None, maxlen: int = 100_000) -> EventHub:
    """A hub fed by ``telemetry``'s events from now on (default: the current telemetry).

    Use ``hub.sse(last_event_id)`` to stream it (see docs/live.md). The hub closes when
    the telemetry stops.

    Args:
        telemetry: The session to watch.
        maxlen: Events the hub keeps for clients (and for ``Last-Event-ID`` resume).

    Raises:
        OtelflowError: No telemetry is running.
    """
    from otelflow import _global
    from otelflow.errors import OtelflowError

    tel = telemetry if telemetry is not None else _global.current()
    if tel is None or not tel.active:
        raise OtelflowError("No telemetry is running; start it before attaching a live view to it.")
    hub = EventHub(maxlen)
    tap(tel, hub)
    return hub


def tap(telemetry: Telemetry, hub: EventHub) -> None:
    """Put every event ``telemetry`` dispatches from now on into ``hub``."""
    telemetry.add_subscriber(_HubTap(hub))  # type: ignore[arg-type]


class RunFollower:
    """Follows (or replays) a run directory into a hub on its own daemon thread.

    Args:
        run_dir: The run directory (``run.json`` and ``*.jsonl``).
        hub: Where lines go.
        poll: Seconds between looks at the files while the run is running.
    """

    def __init__(self, run_dir: str | os.PathLike[str], hub: EventHub, poll: float = 0.25) -> None:
        self.run_dir = Path(run_dir)
        self.hub = hub
        self.poll = poll
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otelflow-live-follower", daemon=True)

    def start(self) -> RunFollower:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _running(self) -> bool:
        try:
            meta = json.loads((self.run_dir / "run.json").read_bytes())
        except (OSError, ValueError):
            return True  # not written yet (or being replaced): keep looking
        return isinstance(meta, dict) and meta.get("status") == "running"

    def _new_lines(self, path: Path) -> list[bytes]:
        offset = self._offsets.get(path, 0)
        try:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return []
        if not data:
            return []
        self._offsets[path] = offset + len(data)
        data = self._partial.pop(path, b"") + data
        lines = data.split(b"\n")
        if lines[-1]:
            self._partial[path] = lines[-1]  # a line still being written
        return [ln for ln in lines[:-1] if any(w in ln for w in _WANTED)]

    def _pass(self) -> int:
        batches = []
        for path in sorted(self.run_dir.glob("*.jsonl")):
            lines = self._new_lines(path)
            if lines:
                batches.append([(_time(ln), i, ln) for i, ln in enumerate(lines)])
        n = 0
        # each file is in time order (within its process); merge the files by time
        for _, _, line in heapq.merge(*batches):
            self.hub.publish(line.strip())
            n += 1
        return n

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                running = self._running()
                grew = self._pass()
                if not running and not grew:
                    break
                self._stop.wait(self.poll)
        except Exception as exc:  # noqa: BLE001 - a broken file ends the stream, not the server
            _log.warning("otelflow live view: could not follow %s: %s", self.run_dir, exc)
        finally:
            self.hub.close()


def _time(line: bytes) -> int:
    i = line.find(b'"event_time":')
    if i < 0:
        return 0
    j = i + 13
    k = j
    while k < len(line) and 48 <= line[k] <= 57:
        k += 1
    return int(line[j:k]) if k > j else 0
