"""The resource monitor: one daemon thread that samples the host (and GPUs) periodically.

Each sample is a list of :class:`~otelflow.events.model.ResourceUpdate` events — one for
the node, one for this process (``"self"``), one for its descendants (``"children"``),
and one per GPU — handed to ``emit`` on the monitor's thread. A sampler or an ``emit``
that raises is logged once and the loop goes on; ``emit`` is never called after
:meth:`ResourceMonitor.stop` has returned.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from otelflow.errors import ConfigError
from otelflow.events.model import Event, ResourceUpdate, now_ns
from otelflow.monitors.gpu import GpuSampler, GpuState, GpuStatus
from otelflow.monitors.host import NodeSampler, ProcessSampler, default_node_name

__all__ = ["ResourceMonitor", "Sampler"]

_log = logging.getLogger("otelflow")

THREAD_NAME = "otelflow-resource-monitor"


class Sampler(Protocol):
    """Something the monitor reads once per sample.

    ``sample`` runs on the monitor's thread (or the caller's, for
    :meth:`ResourceMonitor.sample_once`), never concurrently with itself. It may raise;
    the monitor logs the first failure of each sampler and carries on.
    """

    name: str

    def sample(self, *, node: str, session_id: str | None, event_time: int) -> list[ResourceUpdate]:
        """Return this sampler's updates for one sample."""
        ...


class ResourceMonitor:
    """Samples resource use every ``interval`` seconds and emits ``ResourceUpdate`` events.

    Usable without its thread: :meth:`sample_once` reads everything once and returns the
    updates without emitting them.

    Args:
        interval: Seconds between samples (> 0).
        emit: Called with each update, on the monitor's thread; its result is ignored and
            what it raises is logged once.
        session_id: Stamped on every update.
        node: Node name on every update (default ``socket.gethostname()``).
        gpu: Sample NVIDIA GPUs through NVML when available; False turns it off
            (``gpu_status()`` then says ``DISABLED_BY_CONFIG``).
        samplers: Extra samplers read after the built-in ones.

    Raises:
        ConfigError: If ``interval`` is not a positive finite number.
    """

    def __init__(
        self,
        interval: float,
        emit: Callable[[Event], Any],
        *,
        session_id: str | None = None,
        node: str | None = None,
        gpu: bool = True,
        samplers: Iterable[Sampler] = (),
    ) -> None:
        if isinstance(interval, bool) or not (
            isinstance(interval, (int, float)) and math.isfinite(interval) and interval > 0
        ):
            raise ConfigError(
                f"ResourceMonitor interval must be a positive number of seconds, got {interval!r}"
            )
        self.interval = float(interval)
        self.session_id = session_id
        self.node = node if node is not None else default_node_name()
        self._emit = emit
        # Constructing the host samplers primes their CPU baselines.
        self._gpu = GpuSampler() if gpu else None
        self._samplers: tuple[Sampler, ...] = (
            NodeSampler(),
            ProcessSampler(),
            *((self._gpu,) if self._gpu is not None else ()),
            *samplers,
        )
        self.last: list[ResourceUpdate] = []
        """The updates of the most recent sample (replaced, never mutated)."""
        self._sample_lock = threading.Lock()
        # Held while emitting; stop() takes it after raising the flag, so no emit starts later.
        self._emit_lock = threading.Lock()
        self._stopping: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle_lock = threading.Lock()
        self._failed: set[str] = set()
        self._emit_failed = False

    # -- sampling -------------------------------------------------------------------------------

    def sample_once(self) -> list[ResourceUpdate]:
        """Read every sampler once and return the updates (without emitting them).

        Thread-safe; also what the monitor's thread runs. Also sets :attr:`last`.
        """
        with self._sample_lock:
            event_time = now_ns()
            out: list[ResourceUpdate] = []
            for sampler in self._samplers:
                try:
                    out.extend(
                        sampler.sample(node=self.node, session_id=self.session_id, event_time=event_time)
                    )
                except Exception:  # noqa: BLE001 - a sampler must not stop the monitor
                    self._sampler_failed(sampler)
            self.last = out
            return out

    def _sampler_failed(self, sampler: Sampler) -> None:
        name = getattr(sampler, "name", type(sampler).__name__)
        if name in self._failed:
            _log.debug("otelflow resource sampler %r failed again", name, exc_info=True)
            return
        self._failed.add(name)
        _log.warning(
            "otelflow resource sampler %r failed; it is retried each sample and further "
            "failures are logged at DEBUG",
            name,
            exc_info=True,
        )

    def gpu_status(self) -> GpuStatus:
        """Return whether this monitor collects GPU metrics, and why not if it does not."""
        if self._gpu is None:
            return GpuStatus(GpuState.DISABLED_BY_CONFIG, "GPU sampling turned off (gpu=False)")
        return self._gpu.status()

    # -- thread ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the sampling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the sampling thread: one sample now, then one every ``interval`` seconds.

        Idempotent: a second call while running does nothing. May be called again after
        :meth:`stop`.
        """
        with self._lifecycle_lock:
            if self._stopping is not None and not self._stopping.is_set():
                return
            stopping = threading.Event()
            thread = threading.Thread(target=self._run, args=(stopping,), name=THREAD_NAME, daemon=True)
            self._stopping, self._thread = stopping, thread
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the sampling thread and wait up to ``timeout`` seconds for it to end.

        Idempotent. Once this returns, ``emit`` is not called again (even if a slow
        sampler keeps the thread alive past ``timeout``: it will exit without emitting).
        """
        with self._lifecycle_lock:
            stopping, thread = self._stopping, self._thread
            if stopping is None or thread is None or stopping.is_set():
                return
            stopping.set()
        if thread is threading.current_thread():  # stop() called from inside emit
            return
        deadline = time.monotonic() + max(0.0, timeout)
        # Wait out an emit in progress; emits check the flag under this lock.
        if self._emit_lock.acquire(timeout=max(0.0, timeout)):
            self._emit_lock.release()
        else:  # pragma: no cover - only if emit itself blocks
            _log.warning("otelflow resource monitor: emit did not return within %ss", timeout)
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            _log.warning(
                "otelflow resource monitor thread did not end within %ss; it will emit nothing",
                timeout,
            )

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            updates = self.sample_once()
            with self._emit_lock:
                for update in updates:
                    if stopping.is_set():
                        return
                    try:
                        self._emit(update)
                    except Exception:  # noqa: BLE001 - emit must not stop the monitor
                        self._emit_error()
            if stopping.wait(self.interval):
                return

    def _emit_error(self) -> None:
        if self._emit_failed:
            _log.debug("otelflow resource monitor: emit failed again", exc_info=True)
            return
        self._emit_failed = True
        _log.warning(
            "otelflow resource monitor: emit raised; further failures are logged at DEBUG",
            exc_info=True,
        )
