"""A million tasks through the full pipeline: nothing lost, memory flat.

Speed targets live in bench/bench_pipeline.py; this test asserts completeness and that
memory is bounded by what is in flight, not by how many tasks ever ran.
"""

from __future__ import annotations

import gc
from collections import Counter

import psutil
import pytest

import otelflow

N = 1_000_000


@pytest.mark.slow
def test_one_million_tasks_all_lines_present_and_memory_flat(tmp_path):
    proc = psutil.Process()
    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={})
    trk = otelflow.tracker("scale")
    rss = {}
    with otelflow.workflow_scope("scale"):
        for i in range(N):
            tid = trk.created(None, "noop")
            trk.submitted(tid)
            trk.started(tid)
            trk.completed(tid)
            if i + 1 in (300_000, N):
                tel.flush(timeout=None)
                gc.collect()
                rss[i + 1] = proc.memory_info().rss
    summary = tel.stop()
    growth_mb = (rss[N] - rss[300_000]) / 2**20
    # 700 000 more tasks; any per-task retention of even 40 bytes would show as > 26 MB.
    assert growth_mb < 25, f"RSS grew {growth_mb:.1f} MB between 300k and 1M tasks"
    assert summary["tasks"]["completed"] == N
    assert summary["dropped"]["events"] == 0
    counts: Counter[bytes] = Counter()
    spans = 0
    for f in tel.run_dir.glob("*.jsonl"):
        with open(f, "rb") as fh:
            for line in fh:
                if line.startswith(b'{"section":"event"'):
                    start = line.index(b'"type":"') + 8
                    counts[line[start : line.index(b'"', start)]] += 1
                elif b'"kind":"task"' in line:
                    spans += 1
    for kind in (b"TaskCreated", b"TaskResolved", b"TaskSubmitted", b"TaskStarted", b"TaskCompleted"):
        assert counts[kind] == N, kind
    assert spans == N
