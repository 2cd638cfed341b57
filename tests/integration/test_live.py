"""The live view: the SSE stream (order, resume, stalled clients), serving a run directory,
what the server refuses, and the page in a real headless Chromium."""

from __future__ import annotations

import http.client
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import otelflow
from otelflow.live import LiveServer
from tests.conftest import read_lines
from tests.integration.cdp import Browser, chromium_path
from tests.integration.sse import SseClient


def _start(tmp_path: Path, **options: object) -> otelflow.Telemetry:
    options.setdefault("resource_poll_interval", 0)
    return otelflow.start_telemetry(checkpoint_path=str(tmp_path / "runs"), environ={}, **options)


def _run_tasks(n: int, fail_every: int = 0) -> None:
    trk = otelflow.tracker(backend="test")
    with otelflow.workflow_scope("wf"):
        for i in range(n):
            tid = trk.created(None, f"step{i % 3}")
            trk.submitted(tid)
            trk.started(tid)
            if fail_every and i % fail_every == 0:
                trk.failed(tid, ValueError("bad"))
            else:
                trk.completed(tid)


def _jsonl_event_ids(tel: otelflow.Telemetry) -> list[int]:
    return [r["event_id"] for r in read_lines(tel.run_dir) if r.get("section") in ("event", "log")]


class _Reader(threading.Thread):
    """Reads an SSE stream to its end on a thread, keeping every message."""

    def __init__(self, client: SseClient, stop_after: int | None = None) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.stop_after = stop_after
        self.messages: list = []
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            for msg in self.client.messages():
                self.messages.append(msg)
                if self.stop_after is not None and len(self.messages) >= self.stop_after:
                    break
        except BaseException as exc:
            self.error = exc
        finally:
            self.client.close()

    def data(self) -> list:
        return [m for m in self.messages if m.event == "message"]


def test_an_sse_client_receives_every_event_of_a_1000_task_run_in_order(tmp_path):
    tel = _start(tmp_path, live_port=0)
    reader = _Reader(SseClient(tel.live.address))
    _run_tasks(1000)
    tel.stop()
    reader.join(30)
    assert reader.error is None and not reader.is_alive()
    assert reader.messages[-1].event == "end"
    data = reader.data()
    assert [m.id for m in data] == list(range(1, len(data) + 1))  # consecutive ids, no gap
    assert [m.json()["event_id"] for m in data] == _jsonl_event_ids(tel)  # every event, in order
    kinds = [m.json()["type"] for m in data]
    assert kinds.count("TaskCompleted") == 1000 and kinds[0] == "SessionStarted"


def test_reconnecting_with_last_event_id_resumes_without_gaps(tmp_path):
    tel = _start(tmp_path, live_port=0)
    _run_tasks(300)
    first = _Reader(SseClient(tel.live.address), stop_after=250)
    first.join(30)
    assert first.error is None and len(first.messages) == 250
    last_id = first.messages[-1].id
    second = _Reader(SseClient(tel.live.address, last_event_id=last_id))
    _run_tasks(100)  # more events while the second connection is open
    tel.stop()
    second.join(30)
    assert second.error is None and second.messages[-1].event == "end"
    assert not [m for m in second.messages if m.event == "gap"]
    combined = [*first.data(), *second.data()]
    assert [m.id for m in combined] == list(range(1, len(combined) + 1))
    assert [m.json()["event_id"] for m in combined] == _jsonl_event_ids(tel)


def test_a_stalled_client_neither_blocks_the_run_nor_grows_memory(tmp_path):
    tel = _start(tmp_path)
    server = LiveServer.for_telemetry(tel, port=0, maxlen=500)
    try:
        stalled = SseClient(server.address, rcvbuf=4096)  # connected, then reads nothing
        # In bursts the bus takes without throttling even before the dispatcher has measured
        # its rate: if the producer waits at all, the live view's subscriber slowed the run.
        for _ in range(12):
            _run_tasks(250)
            assert tel.flush(30)
        hub = server.hub
        assert len(hub) <= 500  # the history is bounded, whatever the client does
        summary = tel.stop()
        # the run's pipeline never waited for (or dropped at) the live view's subscriber
        assert summary["dropped"]["subscriber_events"] == 0
        assert summary["dropped"]["events"] == 0
        assert summary["dropped"]["throttled_s"] == 0  # measured: no producer ever waited
        reader = _Reader(stalled)  # now it reads again: what it missed is announced and counted
        reader.join(30)
        assert reader.error is None and reader.messages[-1].event == "end"
        missed = sum(m.json()["missed"] for m in reader.messages if m.event == "gap")
        assert missed > 0 and hub.dropped_for_clients == missed
        assert len(reader.data()) + missed == hub.last_seq  # every event: delivered or counted
    finally:
        server.close(0.5)


@pytest.mark.parametrize("path", [
    "/../run.json", "/%2e%2e/run.json", "/run.json", "/main.jsonl", "/events/../../etc/passwd",
    "//etc/passwd", "/static/..%2f..%2frun.json", "/..\\run.json", "/index.html/../run.json",
])
def test_only_the_page_and_the_stream_are_served_anything_else_is_404(tmp_path, path):
    tel = _start(tmp_path)
    _run_tasks(3)
    tel.stop()
    server = LiveServer.for_run(tel.run_dir, port=0)
    try:
        conn = http.client.HTTPConnection(*server.address, timeout=10)
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 404
        assert b"trace_id" not in body and b"root:" not in body
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200 and b"EventSource" in resp.read()
        conn.close()
    finally:
        server.close(0.5)


def test_binds_loopback_by_default_and_warns_on_all_interfaces(tmp_path, caplog):
    tel = _start(tmp_path, live_port=0)
    assert tel.live.address[0] == "127.0.0.1"
    with caplog.at_level(logging.WARNING, logger="otelflow"):
        server = LiveServer(otelflow.live.EventHub(), host="0.0.0.0", port=0)
    server.close(0.1)
    assert any("bound to all interfaces" in r.getMessage() for r in caplog.records)
    tel.stop()


_WRITER = r"""
import sys, otelflow
tel = otelflow.start_telemetry(checkpoint_path=sys.argv[1], run_id="followed", resource_poll_interval=0,
                               environ={}, flush_interval=0.05)
trk = otelflow.tracker(backend="child")
def batch(n):
    for _ in range(n):
        t = trk.created(None, "child-step"); trk.started(t); trk.completed(t)
    tel.flush()
batch(50)
print("batch1", flush=True)
sys.stdin.readline()
batch(50)
tel.stop()
print("done", flush=True)
"""


def test_a_run_written_by_another_process_is_followed_then_replayed(tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(runs)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "batch1"
        server = LiveServer.for_run(runs / "followed", port=0, poll=0.05)
        try:
            client = SseClient(server.address)
            seen = []
            for msg in client.messages():  # the first batch, while the run is running
                seen.append(msg)
                if sum(m.event == "message" and m.json()["type"] == "TaskCompleted" for m in seen) == 50:
                    break
            child.stdin.write("go\n")
            child.stdin.flush()
            for msg in client.messages():  # followed to the end of the run
                seen.append(msg)
            client.close()
            assert child.stdout.readline().strip() == "done"
            types = [m.json()["type"] for m in seen if m.event == "message"]
            assert types.count("TaskCompleted") == 100 and types[-1] == "SessionEnded"
            assert seen[-1].event == "end"
            # a client arriving after the end gets the whole run replayed
            replay = [m for m in SseClient(server.address).messages() if m.event == "message"]
            assert [m.data for m in replay] == [m.data for m in seen if m.event == "message"]
        finally:
            server.close(0.5)
    finally:
        child.kill()
        child.wait(10)


def test_otelflow_serve_serves_a_finished_run(tmp_path):
    tel = _start(tmp_path)
    _run_tasks(20)
    tel.stop()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "otelflow", "serve", str(tmp_path / "runs"), "--port", "0"],
                            stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert tel.run_id in line
        url = line.split(" at ", 1)[1].split()[0]
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        got = [m for m in SseClient((host, int(port))).messages() if m.event == "message"]
        assert [m.json()["event_id"] for m in got] == _jsonl_event_ids(tel)
    finally:
        proc.send_signal(2)  # Ctrl-C: it stops its server and exits
        assert proc.wait(20) == 0


@pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_the_live_page_in_headless_chromium_shows_counters_rising_and_bars(tmp_path):
    tel = _start(tmp_path, live_port=0, resource_poll_interval=0.2, capture_logs=True)
    log = logging.getLogger("pipeline")
    log.setLevel(logging.INFO)
    gates = [threading.Event(), threading.Event()]
    hold = threading.Event()  # keeps a few tasks running while the page looks

    @otelflow.task(name="slow")
    def slow() -> None:
        hold.wait(60)

    def producer() -> None:
        for gate in gates:
            gate.wait(60)
            _run_tasks(60, fail_every=20)
            log.warning("batch done", extra={"pipeline.batch": 1})
        slow()

    workers = [threading.Thread(target=producer), threading.Thread(target=lambda: (gates[1].wait(60), slow()))]
    for w in workers:
        w.start()
    try:
        with Browser(tmp_path / "profile") as browser:
            browser.open(tel.live.url)
            browser.wait_for("document.getElementById('status').textContent === 'live'")
            gates[0].set()
            first = int(browser.wait_for(
                "(n => n >= 60 ? n : 0)(+document.getElementById('n-completed').textContent"
                " + +document.getElementById('n-failed').textContent)"))
            browser.screenshot(tmp_path / "live-page-1.png")
            gates[1].set()
            browser.wait_for("+document.getElementById('n-running').textContent >= 1")
            second = int(browser.wait_for(
                f"(n => n > {first} ? n : 0)(+document.getElementById('n-completed').textContent"
                " + +document.getElementById('n-failed').textContent)"))
            assert second > first  # the same page's counters went up during the run
            bars = browser.wait_for("document.querySelectorAll('#gantt rect.bar').length")
            assert bars >= 60
            assert browser.eval("document.querySelectorAll('#gantt rect.bar.running').length") >= 1
            assert browser.eval("document.querySelectorAll('#gantt rect.scope.workflow').length") >= 1
            assert browser.wait_for("document.querySelectorAll('#failures li').length") >= 3
            assert "batch done" in browser.wait_for(
                "[...document.querySelectorAll('#logs li')].map(li => li.textContent).join('|')")
            assert browser.wait_for("document.getElementById('cpu').textContent.endsWith('%')")
            shot = tmp_path / "live-page.png"  # the test artifact
            browser.screenshot(shot)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000
            print(f"screenshot: {shot}")
    finally:
        for g in gates:
            g.set()
        hold.set()
        for w in workers:
            w.join(30)
        tel.stop()
    assert json.loads((tel.run_dir / "run.json").read_text())["status"] == "completed"


@pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_the_live_page_replays_a_finished_run(tmp_path):
    tel = _start(tmp_path)
    _run_tasks(40, fail_every=10)
    tel.stop()
    server = LiveServer.for_run(tel.run_dir, port=0)
    try:
        with Browser(tmp_path / "profile") as browser:
            browser.open(server.url)
            browser.wait_for("document.getElementById('status').textContent === 'run ended'")
            browser.wait_for("+document.getElementById('n-completed').textContent === 36")
            assert browser.eval("+document.getElementById('n-failed').textContent") == 4
            assert browser.eval("+document.getElementById('n-created').textContent") == 40
            assert browser.wait_for("document.querySelectorAll('#gantt rect.bar').length") == 40
            browser.screenshot(tmp_path / "replayed-run.png")
    finally:
        server.close(0.5)


def test_a_live_port_in_use_fails_start_in_one_sentence(tmp_path):
    holder = LiveServer(None, port=0)
    try:
        with pytest.raises(otelflow.ConfigError, match=r"cannot listen on 127\.0\.0\.1:\d+: .*; choose another port"):
            _start(tmp_path, live_port=holder.address[1])
        assert otelflow.current_telemetry() is None or not otelflow.current_telemetry().active
    finally:
        holder.close(0.1)


def test_what_live_clients_missed_is_in_the_summary(tmp_path):
    tel = _start(tmp_path, live_port=0)
    ring = tel.live.hub.maxlen
    stalled = SseClient(tel.live.address, rcvbuf=4096)
    _run_tasks(ring // 4 + 500)  # 5 events a task: the ring turns past the stalled client
    assert tel.flush(60)
    summary_during = tel.summary()["dropped"]["live_view_missed"]
    reader = _Reader(stalled)
    summary = tel.stop()
    reader.join(60)
    assert reader.error is None and reader.messages[-1].event == "end"
    missed = sum(m.json()["missed"] for m in reader.messages if m.event == "gap")
    assert summary_during == 0  # counted when the client finds out, not before
    assert missed > 0 and summary["dropped"]["live_view_missed"] == tel.live.hub.dropped_for_clients
    assert len(reader.data()) + missed == tel.live.hub.last_seq
