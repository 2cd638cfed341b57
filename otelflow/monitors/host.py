"""Host sampling with psutil: the node, this process, and its children.

Every value that is a rate or a delta is computed from two readings taken by the sampler
itself, never from state psutil keeps per process (``psutil.cpu_percent(interval=None)``
and the ``nowrap`` caches are module globals that other libraries in the same process
also move): otelflow is a visitor and must neither disturb nor be disturbed by them.

* CPU utilization is ``busy time / wall time`` between two readings. A reading taken less
  than :data:`MIN_CPU_WINDOW_S` after the previous one is too coarse to mean anything (the
  kernel counts CPU time in 10 ms ticks), so it reports ``None`` and keeps the old baseline;
  the next reading then measures over the longer window.
* Disk and network byte counts are deltas since the previous sample, summed per device:
  the first sample reports ``None`` (not the lifetime totals), a device that appears counts
  from its next sample, one that disappears simply stops counting, and a counter that went
  backwards (driver reset or 32-bit wrap) counts from zero.

The samplers are not thread-safe; :class:`~otelflow.monitors.base.ResourceMonitor` calls
them under its own lock.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil

from otelflow.events.model import ResourceUpdate, new_event_id

__all__ = ["MIN_CPU_WINDOW_S", "NodeSampler", "ProcessSampler", "default_node_name"]

_log = logging.getLogger("otelflow")

#: Shortest wall-clock window (seconds) over which CPU utilization is reported.
MIN_CPU_WINDOW_S = 0.05


def default_node_name() -> str:
    """Return the name resource updates carry by default: ``socket.gethostname()``."""
    return socket.gethostname()


# --- counters ---------------------------------------------------------------------------------

_Counters = dict[str, tuple[int, int]]


def _sum_deltas(prev: _Counters | None, cur: _Counters | None) -> tuple[int | None, int | None]:
    """Sum per-device increases between two readings of ``{device: (a, b)}`` counters.

    Devices only in ``cur`` are new and count from the next reading; devices only in
    ``prev`` are gone and count nothing. A counter lower than before was reset or wrapped,
    so its current value is what accrued since then.
    """
    if prev is None or not cur:
        return None, None
    a_total = b_total = 0
    for name, (a, b) in cur.items():
        old = prev.get(name)
        if old is None:
            continue
        a_total += a - old[0] if a >= old[0] else a
        b_total += b - old[1] if b >= old[1] else b
    return a_total, b_total


@functools.lru_cache(maxsize=512)
def _is_whole_disk(name: str) -> bool:
    """Tell whole disks from partitions (Linux lists both; summing both counts bytes twice)."""
    if not sys.platform.startswith("linux") or not os.path.isdir("/sys/block"):
        return True
    return os.path.exists("/sys/block/" + name.replace("/", "!"))


def _read_disks() -> _Counters:
    per_disk = psutil.disk_io_counters(perdisk=True, nowrap=False) or {}
    return {name: (c.read_bytes, c.write_bytes) for name, c in per_disk.items() if _is_whole_disk(name)}


def _read_nics() -> _Counters:
    per_nic = psutil.net_io_counters(pernic=True, nowrap=False) or {}
    return {name: (c.bytes_recv, c.bytes_sent) for name, c in per_nic.items()}


def _node_cpu_busy_total() -> tuple[float, float]:
    """Return (busy, total) CPU seconds over all cores, counted the way psutil counts them."""
    t = psutil.cpu_times()
    total = sum(t)
    # On Linux, guest time is already included in user/nice.
    total -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    idle = t.idle + getattr(t, "iowait", 0.0)
    return total - idle, total


class NodeSampler:
    """Samples the host: CPU (0..1 over all cores), memory, disk and network byte deltas.

    Emits one ``ResourceUpdate(scope="node")`` per sample. ``memory_used_bytes`` is
    ``total - available``, so ``memory_utilization == used / total``.
    """

    name = "node"

    def __init__(self) -> None:
        self._cpu_prev = _node_cpu_busy_total()
        self._wall_prev = time.monotonic()
        self._disk_prev: _Counters | None = None
        self._net_prev: _Counters | None = None
        self._warned: set[str] = set()

    def _io(self, what: str, read: Callable[[], _Counters | None]) -> _Counters | None:
        try:
            return read()
        except Exception:  # noqa: BLE001 - some containers have no /proc/diskstats
            if what not in self._warned:
                self._warned.add(what)
                _log.debug("otelflow: cannot read %s counters", what, exc_info=True)
            return None

    def sample(self, *, node: str, session_id: str | None, event_time: int) -> list[ResourceUpdate]:
        """Read the host once and return its update (called on the sampling thread)."""
        busy, total = _node_cpu_busy_total()
        now = time.monotonic()
        cpu: float | None = None
        prev_busy, prev_total = self._cpu_prev
        if now - self._wall_prev >= MIN_CPU_WINDOW_S and total > prev_total:
            cpu = min(1.0, max(0.0, (busy - prev_busy) / (total - prev_total)))
            self._cpu_prev = (busy, total)
            self._wall_prev = now

        mem = psutil.virtual_memory()
        used = mem.total - mem.available

        disks = self._io("disk", _read_disks)
        nics = self._io("network", _read_nics)
        disk_read, disk_write = _sum_deltas(self._disk_prev, disks)
        net_recv, net_sent = _sum_deltas(self._net_prev, nics)
        self._disk_prev, self._net_prev = disks, nics

        return [
            ResourceUpdate(
                event_id=new_event_id(),
                event_time=event_time,
                session_id=session_id,
                scope="node",
                node=node,
                cpu_utilization=cpu,
                memory_utilization=used / mem.total if mem.total else None,
                memory_used_bytes=used,
                memory_total_bytes=mem.total,
                disk_read_bytes=disk_read,
                disk_write_bytes=disk_write,
                net_recv_bytes=net_recv,
                net_sent_bytes=net_sent,
            )
        ]


# --- processes --------------------------------------------------------------------------------


def _own(t: Any) -> float:
    return float(t.user + t.system)


def _reaped(t: Any) -> float:
    return getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)


class ProcessSampler:
    """Samples this process (``device="self"``) and all its descendants (``"children"``).

    CPU is ``cpu seconds / wall seconds`` between samples (1.0 = one core busy). For
    ``"children"`` the CPU seconds are those of the live descendants (their own and those
    of the processes *they* reaped) plus those of the children this process reaped, so a
    child that starts and ends between two samples is still counted; descendants that
    vanish otherwise (orphaned, or unreadable) can make the sum shrink, which counts as 0.
    ``memory_used_bytes`` is the RSS (summed over live descendants for ``"children"``,
    so shared pages count once per process); ``memory_utilization`` is that over the
    host's memory. Descendants that end, are zombies, or deny access are skipped. In a
    forked child the sampler starts over: its first sample there reports CPU as None.
    """

    name = "process"

    def __init__(self) -> None:
        self._mem_total = psutil.virtual_memory().total
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._proc = psutil.Process(self._pid)
        self._wall_prev = time.monotonic()
        self._self_prev, self._children_prev, _, _ = self._read()

    def _read(self) -> tuple[float, float, int, int]:
        """Return (own cpu s, descendants' cpu s, own rss, descendants' rss)."""
        children_cpu = 0.0
        children_rss = 0
        for child in self._proc.children(recursive=True):
            try:
                with child.oneshot():
                    t = child.cpu_times()
                    children_cpu += _own(t) + _reaped(t)
                    children_rss += child.memory_info().rss
            except psutil.Error:  # gone, zombie, or not ours to read
                continue
        # Read our own times last: a child reaped while we walked the tree then moves into
        # children_* here instead of dropping out of both terms.
        with self._proc.oneshot():
            t = self._proc.cpu_times()
            rss = self._proc.memory_info().rss
        return _own(t), children_cpu + _reaped(t), rss, children_rss

    def sample(self, *, node: str, session_id: str | None, event_time: int) -> list[ResourceUpdate]:
        """Read this process and its descendants once (called on the sampling thread)."""
        if os.getpid() != self._pid:  # forked: measure the new process from here on
            self._reset()
        own_cpu, children_cpu, rss, children_rss = self._read()
        now = time.monotonic()
        wall = now - self._wall_prev
        self_util: float | None = None
        children_util: float | None = None
        if wall >= MIN_CPU_WINDOW_S:
            self_util = max(0.0, own_cpu - self._self_prev) / wall
            children_util = max(0.0, children_cpu - self._children_prev) / wall
            self._wall_prev = now
            self._self_prev, self._children_prev = own_cpu, children_cpu
        total = self._mem_total
        common: dict[str, Any] = {"session_id": session_id, "node": node}
        return [
            ResourceUpdate(
                event_id=new_event_id(),
                event_time=event_time,
                scope="process",
                device="self",
                pid=self._pid,
                cpu_utilization=self_util,
                memory_used_bytes=rss,
                memory_utilization=rss / total if total else None,
                **common,
            ),
            ResourceUpdate(
                event_id=new_event_id(),
                event_time=event_time,
                scope="process",
                device="children",
                cpu_utilization=children_util,
                memory_used_bytes=children_rss,
                memory_utilization=children_rss / total if total else None,
                **common,
            ),
        ]
