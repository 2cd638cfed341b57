"""The log capture travels to worker processes: records land in the worker's file with the
ids of the task that logged them, and the worker's own logging keeps working."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import otelflow
from otelflow import toolkit
from otelflow.integrations import instrument
from tests.conftest import read_lines

METHODS = [m for m in ("fork", "spawn") if m in mp.get_all_start_methods()]


def own_logging(path: str) -> None:
    """Pool initializer: the worker's own file logging, as Parsl or Dask workers have."""
    handler = logging.FileHandler(path + f".{os.getpid()}")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logging.getLogger("myapp").addHandler(handler)


def work(i: int) -> int:
    logging.getLogger("myapp.worker").warning("step %d", i, extra={"myapp.i": i})
    return os.getpid()


def _task_ids(run_dir: Path) -> dict[str, str]:
    """Task span id -> task id, from the task spans."""
    return {
        s["span_id"]: s["attributes"]["otelflow.task.id"]
        for s in read_lines(run_dir, "span") if s.get("kind") == "task"
    }


def _worker_logs(run_dir: Path) -> list[dict]:
    out = []
    for f in sorted(run_dir.glob("worker-*.jsonl")):
        out += [dict(r, file=f.name) for r in read_lines_of(f) if r.get("section") == "log"]
    return out


def read_lines_of(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize("method", METHODS)
def test_process_pool_worker_records_carry_their_tasks_ids(tmp_path, method):
    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path / "runs"), resource_poll_interval=0, environ={})
    handle = otelflow.capture_logging("myapp", level="WARNING")
    own = str(tmp_path / "own.log")
    ctx = mp.get_context(method)
    with instrument(ProcessPoolExecutor(2, mp_context=ctx, initializer=own_logging, initargs=(own,))) as pool:
        with otelflow.workflow_scope("wf") as wid:
            pids = [f.result() for f in [pool.submit(work, i) for i in range(6)]]
    handle.stop()
    tel.stop()
    run_dir = tel.run_dir
    assert run_dir is not None
    logs = _worker_logs(run_dir)
    assert sorted(r["attributes"]["myapp.i"] for r in logs) == list(range(6))
    assert not [r for r in read_lines_of(next(run_dir.glob("main-*.jsonl"))) if r.get("section") == "log"]
    spans = _task_ids(run_dir)
    for r in logs:
        assert r["trace_id"] == tel.trace_id
        assert spans[r["span_id"]] == r["task_id"]  # the task's own span and id
        assert r["workflow_id"] == wid
        assert r["file"] == f"worker-{os.uname().nodename}-{r['process']}.jsonl"  # its own file
        assert r["attribute_types"] == {"myapp.i": "integer"}
    # the workers' own log files kept receiving their records
    own_lines = []
    for pid in set(pids):
        own_lines += Path(f"{own}.{pid}").read_text().splitlines()
    assert sorted(own_lines) == sorted(f"WARNING myapp.worker step {i}" for i in range(6))


def measured_work(i: int) -> int:
    return work(i)


@pytest.mark.parametrize("method", METHODS)
def test_the_toolkit_carrier_brings_the_capture_to_an_engines_worker(tmp_path, method):
    """What the Dask/AsyncFlow integrations do: Measured + carrier on a plain pool."""
    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path / "runs"), resource_poll_interval=0, environ={})
    handle = otelflow.capture_logging("myapp", level="WARNING")
    trk = otelflow.tracker(backend="engine")
    with ProcessPoolExecutor(1, mp_context=mp.get_context(method)) as pool:
        tids = [trk.created(None, "step") for _ in range(3)]
        carrier = toolkit.carrier()
        assert carrier is not None and carrier.logs == otelflow.logs.LogCapture(("myapp",), logging.WARNING)
        futures = [pool.submit(toolkit.Measured(measured_work, tid, carrier.with_task(tid)), i)
                   for i, tid in enumerate(tids)]
        for tid, fut in zip(tids, futures, strict=True):
            trk.record_outcome(tid, fut.result().outcome)
    handle.stop()
    tel.stop()
    assert tel.run_dir is not None
    logs = sorted(_worker_logs(tel.run_dir), key=lambda r: r["attributes"]["myapp.i"])
    assert [r["task_id"] for r in logs] == tids
    spans = _task_ids(tel.run_dir)
    assert [spans[r["span_id"]] for r in logs] == tids


def test_nothing_travels_when_nothing_is_captured(tmp_path):
    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path / "runs"), resource_poll_interval=0, environ={})
    carrier = toolkit.carrier()
    assert carrier is not None and carrier.logs is None
    tel.stop()


def test_apply_and_undo_in_a_worker_leave_its_loggers_as_they_were(tmp_path):
    log = logging.getLogger("engine.worker")
    own = logging.StreamHandler()
    log.addHandler(own)
    before = (list(log.handlers), log.level, list(logging.getLogger().handlers))
    applied = otelflow.logs.LogCapture(("engine.worker", ""), logging.INFO).apply()
    applied.undo()
    assert (list(log.handlers), log.level, list(logging.getLogger().handlers)) == before
    log.removeHandler(own)


_forwarded: list[bytes] = []


def forwarding_work(carrier: toolkit.Carrier, task_id: str, i: int) -> bytes:
    """What a Dask worker plugin does: join with forward=, run the task, send the lines home."""
    toolkit.join_run(carrier, forward=_forwarded.append)
    with toolkit.task_context(carrier, task_id):
        logging.getLogger("myapp.worker").warning("forwarded %d", i, extra={"myapp.i": i})
    toolkit.flush_worker()
    data = b"".join(_forwarded)
    _forwarded.clear()
    return data


@pytest.mark.parametrize("method", METHODS)
def test_worker_records_can_go_home_over_the_engines_connection(tmp_path, method):
    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path / "runs"), resource_poll_interval=0, environ={})
    handle = otelflow.capture_logging("myapp", level="WARNING")
    trk = otelflow.tracker(backend="engine")
    tids = [trk.created(None, "step") for _ in range(3)]
    carrier = toolkit.carrier()
    assert carrier is not None
    with ProcessPoolExecutor(1, mp_context=mp.get_context(method)) as pool:
        # no shared run directory in the worker: the lines come back with the result
        remote = toolkit.Carrier.from_dict({**carrier.to_dict(), "runs_dir": None})
        for i, tid in enumerate(tids):
            data = pool.submit(forwarding_work, remote, tid, i).result()
            toolkit.ingest(data, "dask-worker-1")
            trk.completed(tid)
    handle.stop()
    tel.stop()
    assert tel.run_dir is not None
    lines = read_lines_of(tel.run_dir / "dask-worker-1.jsonl")
    logs = sorted((r for r in lines if r.get("section") == "log"), key=lambda r: r["attributes"]["myapp.i"])
    assert [r["task_id"] for r in logs] == tids
    assert [r["span_id"] for r in logs] == [toolkit.task_span_id(tel.trace_id, t) for t in tids]
