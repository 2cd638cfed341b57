"""Host sampling against the real machine: node, this process, and its children (real psutil)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import psutil
import pytest

from otelflow.events.model import ResourceUpdate
from otelflow.monitors import ResourceMonitor, host
from otelflow.monitors.host import MIN_CPU_WINDOW_S, _sum_deltas

_BURN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end:\n    pass\n"


def _by(updates: list[ResourceUpdate], scope: str, device: str | None = None) -> ResourceUpdate:
    found = [u for u in updates if u.scope == scope and u.device == device]
    assert len(found) == 1, updates
    return found[0]


def _loopback_traffic(nbytes: int) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname(), timeout=5) as client:
            conn, _ = server.accept()
            with conn:
                client.sendall(b"x" * nbytes)
                got = 0
                while got < nbytes:
                    got += len(conn.recv(65536))


def _monitor(**kw: object) -> ResourceMonitor:
    return ResourceMonitor(60.0, lambda _e: None, gpu=False, **kw)  # type: ignore[arg-type]


def test_node_sample_has_cpu_memory_and_no_io_deltas_on_first_sample() -> None:
    m = _monitor(session_id="s-1")
    time.sleep(MIN_CPU_WINDOW_S + 0.02)
    first = m.sample_once()
    node = _by(first, "node")
    assert node.node == socket.gethostname()
    assert node.session_id == "s-1"
    assert node.event_id != 0 and node.event_time > 0
    assert node.cpu_utilization is not None and 0.0 <= node.cpu_utilization <= 1.0
    assert node.memory_total_bytes and node.memory_total_bytes > 0
    assert node.memory_used_bytes is not None and 0 < node.memory_used_bytes <= node.memory_total_bytes
    assert node.memory_utilization is not None and 0.0 < node.memory_utilization <= 1.0
    # The first sample has no previous reading: deltas are unknown, not lifetime totals.
    assert node.disk_read_bytes is None and node.disk_write_bytes is None
    assert node.net_recv_bytes is None and node.net_sent_bytes is None
    assert m.last == first


def test_self_process_sample_has_pid_and_rss() -> None:
    m = _monitor(node="n1")
    me = _by(m.sample_once(), "process", "self")
    assert me.pid == os.getpid()
    assert me.node == "n1"
    assert me.memory_used_bytes is not None and me.memory_used_bytes > 0
    assert me.memory_utilization is not None and 0.0 < me.memory_utilization < 1.0


def test_second_sample_after_disk_and_network_activity_has_non_negative_deltas() -> None:
    m = _monitor()
    m.sample_once()
    with tempfile.TemporaryFile() as f:
        f.write(os.urandom(1 << 20))
        f.flush()
        os.fsync(f.fileno())
    _loopback_traffic(256 * 1024)
    time.sleep(MIN_CPU_WINDOW_S + 0.02)
    node = _by(m.sample_once(), "node")
    for field in ("disk_read_bytes", "disk_write_bytes", "net_recv_bytes", "net_sent_bytes"):
        value = getattr(node, field)
        # None only where the host exposes no such counters (some containers).
        assert value is None or value >= 0, field
    assert node.cpu_utilization is not None and 0.0 <= node.cpu_utilization <= 1.0


def test_cpu_is_none_when_samples_are_closer_than_the_minimum_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # The samplers' clock is held still between two samples, so they are closer than the
    # window however long a loaded machine stalls between the two calls; the real sleeps
    # only let the CPU counters move.
    clock = [time.monotonic()]
    monkeypatch.setattr(host, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    m = _monitor()
    time.sleep(MIN_CPU_WINDOW_S + 0.02)
    clock[0] += MIN_CPU_WINDOW_S + 0.02
    m.sample_once()
    again = m.sample_once()
    assert _by(again, "node").cpu_utilization is None
    assert _by(again, "process", "self").cpu_utilization is None
    # The baseline was kept, so the next sample measures over the longer window.
    time.sleep(MIN_CPU_WINDOW_S + 0.02)
    clock[0] += MIN_CPU_WINDOW_S + 0.02
    assert _by(m.sample_once(), "node").cpu_utilization is not None


def test_busy_child_shows_up_in_children_cpu_and_rss() -> None:
    m = _monitor()
    # Other tests may leave long-lived children (e.g. multiprocessing's resource tracker).
    base_rss = _by(m.sample_once(), "process", "children").memory_used_bytes or 0
    child = subprocess.Popen([sys.executable, "-c", _BURN.format(s=1.0)])
    try:
        # Until the child has burned 0.1 s of its 1 s (a loaded machine may start it late);
        # what is left keeps it alive and busy through the next sample.
        proc = psutil.Process(child.pid)
        deadline = time.monotonic() + 60
        while sum(proc.cpu_times()[:2]) < 0.1 and time.monotonic() < deadline:
            time.sleep(0.01)
        kids = _by(m.sample_once(), "process", "children")
        assert kids.cpu_utilization is not None and kids.cpu_utilization > 0
        assert kids.memory_used_bytes is not None and kids.memory_used_bytes > base_rss
        during = kids.memory_used_bytes
    finally:
        child.wait(timeout=10)
    # Once reaped, the rest of its CPU time still counts (short-lived children are seen);
    # its memory no longer does (other long-lived children may have grown by a page or two).
    kids = _by(m.sample_once(), "process", "children")
    assert kids.cpu_utilization is not None and kids.cpu_utilization > 0
    assert kids.memory_used_bytes is not None
    assert kids.memory_used_bytes < during and kids.memory_used_bytes <= base_rss + (1 << 20)


def test_child_that_lives_between_two_samples_is_counted() -> None:
    m = _monitor()
    m.sample_once()
    subprocess.run([sys.executable, "-c", _BURN.format(s=0.2)], check=True, timeout=10)
    kids = _by(m.sample_once(), "process", "children")
    assert kids.cpu_utilization is not None and kids.cpu_utilization > 0


def test_sum_deltas_handles_first_sample_resets_and_devices_that_come_and_go() -> None:
    assert _sum_deltas(None, {"eth0": (10, 20)}) == (None, None)
    assert _sum_deltas({"eth0": (1, 1)}, {}) == (None, None)
    prev = {"eth0": (100, 200), "gone0": (5, 5), "wrap0": (900, 900)}
    cur = {"eth0": (150, 260), "new0": (7, 7), "wrap0": (30, 40)}
    # eth0 grew by (50, 60); gone0 and new0 count nothing; wrap0 restarted from 0.
    assert _sum_deltas(prev, cur) == (50 + 30, 60 + 40)
