"""Task CPU time for inline and thread-pool tasks: ``time.thread_time`` of the thread that ran it."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import otelflow
from otelflow.integrations import instrument, task_id_of, uninstrument
from tests.conftest import read_lines


def burn(seconds_of_cpu: float) -> None:
    end = time.thread_time() + seconds_of_cpu
    while time.thread_time() < end:
        pass


def terminal(tel: otelflow.Telemetry, tid: str) -> dict:
    (ev,) = [e for e in read_lines(tel.run_dir, "event") if e.get("task_id") == tid and e["type"] == "TaskCompleted"]
    return ev


def test_inline_and_thread_pool_tasks_report_their_own_threads_cpu(tmp_path):
    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path / "runs"), resource_poll_interval=0, environ={})
    stop = threading.Event()

    def noise_loop() -> None:
        while not stop.is_set():
            burn(0.01)

    # Another thread burns CPU the whole time: a task must not be charged for it.
    noise = threading.Thread(target=noise_loop, daemon=True)
    noise.start()
    try:
        busy = otelflow.task(burn, name="busy-inline")
        busy(0.05)
        idle = otelflow.task(time.sleep, name="idle-inline")
        idle(0.2)
        with ThreadPoolExecutor(2) as pool:
            instrument(pool)
            try:
                fb, fi = pool.submit(burn, 0.05), pool.submit(time.sleep, 0.2)
                fb.result(timeout=30)
                fi.result(timeout=30)
            finally:
                uninstrument(pool)
    finally:
        stop.set()
        noise.join(10)
    summary = tel.stop()
    spans = {s["name"]: s for s in read_lines(tel.run_dir, "span") if s.get("kind") == "task"}
    assert spans["busy-inline"]["attributes"]["otelflow.task.cpu_time_s"] >= 0.05
    assert spans["idle-inline"]["attributes"]["otelflow.task.cpu_time_s"] < 0.05  # slept, not burned
    assert terminal(tel, task_id_of(fb))["cpu_time_s"] >= 0.05
    assert terminal(tel, task_id_of(fi))["cpu_time_s"] < 0.05
    assert "peak_rss_bytes" not in terminal(tel, task_id_of(fb))  # a process-task figure only
    assert summary["tasks"]["completed"] == 4
