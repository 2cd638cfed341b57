"""Dask with a `dask scheduler` and two `dask worker` processes started from the command line.

Each process has its own working and local directory (no run directory is reachable from
them), loads otelflow with ``--preload otelflow.integrations.dask`` and is stopped by PID.
Workers run without a nanny, so the PID the test holds is the worker itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed")

from distributed import Client

import otelflow
from otelflow import toolkit
from otelflow.events import TaskStarted
from tests.conftest import read_lines
from tests.integration.dask_tasks import nap, nap_unless_on, traced
from tests.integration.otlp_receiver import HttpReceiver

ROOT = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).parent / "dask")


@dataclass
class CliCluster:
    client: Client
    base: Path
    scheduler: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]]  # address -> process
    dirs: list[Path]
    receiver: HttpReceiver  # the workers' own OTLP endpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(15)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliCluster]:
    base = tmp_path_factory.mktemp("dask-cli")
    receiver = HttpReceiver().__enter__()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OTELFLOW_RUNS_DIR", None)
    # The workers (only they) have an OTLP configuration of their own.
    worker_env = {
        **env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    dirs: list[Path] = []

    def spawn(name: str, *args: str, env: dict[str, str] = env) -> subprocess.Popen[bytes]:
        wd = base / name
        wd.mkdir()
        dirs.append(wd)
        log = (base / f"{name}.log").open("wb")
        p = subprocess.Popen(
            [DASK, *args, "--preload", "otelflow.integrations.dask"],
            cwd=wd, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(p)
        return p

    client = None
    try:
        sched = spawn("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
        for name in ("w1", "w2"):
            spawn(
                name, "worker", address, "--name", name, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                "--host", "127.0.0.1", "--local-directory", str(base / name), env=worker_env,
            )  # fmt: skip
        client = Client(address, timeout=60)
        client.wait_for_workers(2, timeout=60)
        by_name = dict(zip(("w1", "w2"), procs[1:], strict=True))
        workers = {addr: by_name[w["name"]] for addr, w in client.scheduler_info()["workers"].items()}
        yield CliCluster(client, base, sched, workers, dirs, receiver)
    finally:
        if client is not None:
            client.close()
        for p in reversed(procs):
            _stop(p)
        receiver.stop()


def start(cluster: CliCluster, **kw: Any) -> otelflow.Telemetry:
    return otelflow.start_telemetry(checkpoint_path=str(cluster.base / "client-runs"), resource_poll_interval=0, **kw)


def test_worker_records_reach_the_submit_host_without_a_shared_directory(cluster):
    client = cluster.client
    # --preload installed the plugins before any client registered them.
    assert client.run_on_scheduler(lambda dask_scheduler: "otelflow" in dask_scheduler.plugins)
    assert set(client.run(lambda dask_worker: "otelflow-worker" in dask_worker.plugins).values()) == {True}
    tel = start(cluster, capture_logs=True)
    otelflow.instrument(client)
    w1, w2 = sorted(cluster.workers)
    with otelflow.workflow_scope("remote") as wid:
        futs = client.map(traced, range(4), workers=[w1]) + client.map(traced, range(4, 8), workers=[w2])
        assert client.gather(futs) == list(range(8))
        total = client.submit(sum, futs, workers=[w1])  # fetches the four results of w2
        assert total.result() == 28
        assert client.submit(nap, 0.2).result() == 0.2
    trace_hex = tel.trace_id
    run_dir = tel.run_dir
    otelflow.integrations.dask.recorder_of(client).flush(timeout=30)  # a round trip to the scheduler
    tel.stop()

    spans = {s["attributes"]["otelflow.task.id"]: s for s in read_lines(run_dir, "span") if s["kind"] == "task"}
    assert len(spans) == 10
    assert {spans[f.key]["attributes"]["otelflow.task.worker"] for f in futs} == {w1, w2}
    task_span_ids = sorted(toolkit.task_span_id(trace_hex, f.key) for f in futs)
    user = [s for s in read_lines(run_dir, "span") if s["name"] == "user-work"]
    assert sorted(s["parent_span_id"] for s in user) == task_span_ids
    logs = [r for r in read_lines(run_dir, "log") if r.get("logger") == "tests.dask"]
    assert sorted(r["span_id"] for r in logs) == task_span_ids
    notes = [e for e in read_lines(run_dir, "event") if e["type"] == "tests.DaskNote"]
    assert sorted(e["n"] for e in notes) == list(range(8))
    assert {e["workflow_id"] for e in notes} == {wid}
    (napped,) = [s for s in spans.values() if s["name"] == "nap"]
    started = dict(napped["events"])["TaskStarted"]
    # The 0.2 s nap: sleep sets the floor; the ceiling leaves a loaded machine a second of stalls.
    assert 0.18 <= (napped["end_time"] - started) / 1e9 < 1.2
    # The workers' lines came home over Dask's connections: one file per worker process.
    pids = {str(p.pid) for p in cluster.workers.values()}
    forwarded = {f.stem.rsplit("-", 1)[-1] for f in run_dir.glob("worker-*.jsonl")}
    assert forwarded == pids
    # …and nothing was written where the scheduler and workers run.
    assert not [f for d in cluster.dirs for f in d.rglob("*.jsonl")]
    # Dask's own breakdown: the reduction waited for its inputs from the other worker.
    (times,) = [e for e in read_lines(run_dir, "event") if e["type"] == "dask.TaskTimes" and e["task_id"] == total.key]
    assert times["seconds"]["transfer"] > 0
    updates = [e for e in read_lines(run_dir, "event") if e.get("device") == "dask-worker"]
    assert {e["node"] for e in updates} == {w1, w2}
    # Workers with OTLP settings of their own export their spans themselves, each once.
    exported = cluster.receiver.wait_for(
        lambda: (got := [s for s in cluster.receiver.spans() if s.name == "user-work"]) and len(got) >= 8 and got,
        30,
        "the workers' user spans over OTLP",
    )
    assert sorted(s.parent_span_id for s in exported) == task_span_ids
    assert {s.trace_id for s in exported} == {trace_hex}


def test_sigkill_of_a_worker_mid_run_shows_both_attempts_and_the_run_completes(cluster):
    client = cluster.client
    tel = start(cluster)
    otelflow.instrument(client)
    w1, w2 = sorted(cluster.workers)
    first_on: dict[str, str] = {}
    victim_running = threading.Event()

    def on_start(ev: Any) -> None:
        first_on.setdefault(ev.worker, ev.task_id)
        if ev.worker == w1:
            victim_running.set()

    otelflow.subscribe(on_start, TaskStarted)
    # On w1 the nap outlasts the test: the kill lands mid-task however late its start arrives.
    futs = client.map(nap_unless_on, [1.0] * 4, stall_on=w1, pure=False)
    assert victim_running.wait(60)
    os.kill(cluster.workers[w1].pid, signal.SIGKILL)
    assert client.gather(futs) == [1.0] * 4
    run_dir = tel.run_dir
    tel.stop()

    victim = first_on[w1]
    attempts = sorted(
        (e["attempt"], e["outcome"], e["worker"])
        for e in read_lines(run_dir, "event")
        if e["type"] == "dask.TaskAttempt" and e["task_id"] == victim
    )
    assert attempts == [(1, "worker-lost", w1), (2, "completed", w2)]
    spans = [s for s in read_lines(run_dir, "span") if s["kind"] == "task"]
    assert len(spans) == 4 and {s["status"] for s in spans} == {"completed"}
    report = subprocess.run(
        [sys.executable, "-m", "otelflow", "report", str(run_dir)],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
