"""The worker side: per-task resource use and the lazily started worker session."""

from __future__ import annotations

import os
import sys

import pytest

import otelflow
from otelflow import _global
from otelflow.integrations import _worker
from otelflow.toolkit import Carrier, Measured, ScopeRef
from tests.conftest import read_lines


def _carrier(cfg: _worker.WorkerConfig, workflow_id: str | None = None) -> Carrier:
    """The public carrier for a worker config (what the process-pool integration sends)."""
    return Carrier(
        run_id=cfg.run_id,
        session_id=cfg.session_id,
        trace_id=cfg.trace_id,
        session_span_id=cfg.session_span_id or "0" * 16,
        runs_dir=cfg.runs_dir,
        service_name=cfg.service_name,
        flush_interval=cfg.flush_interval,
        set_global_providers=cfg.set_global_providers,
        parent_pid=cfg.parent_pid,
        scope=ScopeRef(workflow_id=workflow_id) if workflow_id else None,
        join=cfg.session,
    )


@pytest.fixture
def parent(tmp_path):
    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={})
    yield tel
    tel.stop()


@pytest.fixture
def as_worker(parent):
    """This test process plays a worker of ``parent``: the parent is not current here."""
    cfg = _worker.WorkerConfig.of(parent, session=True)
    cfg.parent_pid = -1
    _global.uninstall(parent)
    yield cfg
    _worker.stop_worker_session()
    _global.reset()
    _global.install(parent)


def test_usage_counts_cpu_and_the_tasks_own_peak_rss():
    import mmap

    u = _worker.ProcessUsage()
    # An anonymous mapping, touched page by page: counted in RSS, and given back to the OS
    # when closed (a bytearray may stay in malloc's heap after it is freed).
    block = mmap.mmap(-1, 32 * 1024 * 1024)
    for off in range(0, len(block), 4096):
        block[off] = 1
    sum(range(200_000))
    cpu, peak = u.end()
    block.close()
    assert cpu > 0
    assert peak is not None and peak > 32 * 1024 * 1024
    if sys.platform.startswith("linux") and _worker._proc_files():
        # The peak was reset at the start of the next task: the unmapped block is not in it.
        _cpu2, peak2 = _worker.ProcessUsage().end()
        assert peak2 is not None and peak2 < peak - 16 * 1024 * 1024


def test_worker_session_joins_the_parents_run_trace_and_session(parent, as_worker):
    sess = _worker.worker_session(as_worker)
    assert sess is not None and sess is _worker.worker_session(as_worker)  # started once
    assert _global.current() is sess
    assert sess.run_dir == parent.run_dir
    assert sess.trace_id == parent.trace_id and sess.session_id == parent.session_id
    call = Measured(lambda: otelflow.emit("tests.UnitNote", n=1), "t-1", _carrier(as_worker, "wf-1"))
    otelflow.define_event("tests.UnitNote", n=int)
    call()
    # Flushed when the task ended (a killed worker loses nothing a finished task recorded).
    worker_file = next(parent.run_dir.glob("worker-*.jsonl"))
    assert b"tests.UnitNote" in worker_file.read_bytes()
    _worker.stop_worker_session()
    assert _global.current() is None
    files = sorted(p.name for p in parent.run_dir.iterdir())
    assert any(f.startswith("worker-") and f.endswith(f"-{os.getpid()}.jsonl") for f in files)
    assert "run.json" in files  # the parent's, not overwritten by the worker
    note = next(e for e in read_lines(parent.run_dir, "event") if e["type"] == "tests.UnitNote")
    assert note["session_id"] == parent.session_id and note["workflow_id"] == "wf-1"
    assert note["trace_id"] == parent.trace_id


def test_a_new_parent_run_moves_the_worker_session(parent, as_worker, tmp_path):
    first = _worker.worker_session(as_worker)
    other = _worker.WorkerConfig(**{k: getattr(as_worker, k) for k in _worker.WorkerConfig.__slots__})
    other.run_id = "another-run"
    second = _worker.worker_session(other)
    assert second is not None and second is not first and not first.active
    assert second.run_dir.name == "another-run"


def test_no_session_without_a_run_directory_or_when_user_telemetry_is_current(parent, as_worker):
    no_dir = _worker.WorkerConfig(**{k: getattr(as_worker, k) for k in _worker.WorkerConfig.__slots__})
    no_dir.runs_dir = None
    assert _worker.worker_session(no_dir) is None
    _global.install(parent)  # say the user started telemetry in this worker
    try:
        assert _worker.worker_session(as_worker) is None
    finally:
        _global.uninstall(parent)


def test_a_failing_start_is_logged_once_and_the_task_still_runs(parent, as_worker, caplog_otelflow, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad = _worker.WorkerConfig(**{k: getattr(as_worker, k) for k in _worker.WorkerConfig.__slots__})
    bad.runs_dir = str(blocker)
    bad.run_id = "unwritable"
    assert _worker.worker_session(bad) is None
    assert _worker.worker_session(bad) is None
    assert caplog_otelflow.text.count("could not start telemetry in worker") == 1
    result = Measured(lambda: 41 + 1, "t", _carrier(bad))()
    assert result.value == 42
    _worker._failed_runs.clear()


def test_after_fork_the_child_forgets_the_session(parent, as_worker):
    _worker.worker_session(as_worker)
    saved = (_worker._session, _worker._session_run)
    _worker._after_fork()
    assert _worker._session is None and _worker._session_run is None
    _worker._session, _worker._session_run = saved


def test_a_task_that_records_nothing_skips_the_flush(parent, as_worker, monkeypatch):
    sess = _worker.worker_session(as_worker)
    assert sess is not None
    flushes = []
    real_flush = sess.flush
    monkeypatch.setattr(sess, "flush", lambda timeout=None: flushes.append(1) or real_flush(timeout))
    Measured(lambda: 1, "t-a", _carrier(as_worker))()
    assert flushes == []
    otelflow.define_event("tests.UnitNote", n=int)
    emitted = []
    Measured(lambda: emitted.append(otelflow.emit("tests.UnitNote", n=2)), "t-b", _carrier(as_worker))()
    assert emitted == [True] and flushes == [1]
