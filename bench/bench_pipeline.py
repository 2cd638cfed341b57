"""Pipeline benchmark: N tasks × 4 lifecycle events through the whole otelflow pipeline.

JSONL, spans and metrics are all on (the resource monitor is off so it does not add
noise). Each N runs in a fresh subprocess so peak RSS is that run's own.

Reports per N: µs per task end to end (first emit → stop() returned), CPU µs per task
(every thread of the process over the same span: steadier than wall time when other jobs
share the machine; with the GIL the two are close on a quiet one), caller-side µs
per emit (measured on a burst that fits the bus, so no back-pressure is included),
events/s, peak RSS, time producers were throttled, and a loss check against the JSONL.

    python bench/bench_pipeline.py                 # N = 1e4, 1e5, 1e6, tracker path
    python bench/bench_pipeline.py --n 100000      # one size
    python bench/bench_pipeline.py --n 100000 --path tracker --path task --path rhapsody

``--path``: ``tracker`` (an engine's 4 lifecycle calls per task), ``task`` (a no-op
``@otelflow.task`` call), ``rhapsody`` (the same 4 steps through the RHAPSODY telemetry
layer's task hooks, when ``rhapsody-py[telemetry]`` is installed), in one run for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def run_rhapsody(n: int, runs_dir: str) -> dict:
    """The same four steps per task through the RHAPSODY telemetry layer (TAL) task hooks."""
    import asyncio

    from rhapsody.telemetry.manager import TelemetryManager

    async def main() -> float:
        tal = TelemetryManager("bench", checkpoint_path=runs_dir, checkpoint_interval=10.0)
        await tal.start()
        t0 = time.perf_counter()
        cpu[0] = time.process_time()
        for i in range(n):
            task = {"uid": f"task.{i:07d}", "backend": "bench", "task_type": "function", "function": None}
            tal._on_task_created(task)
            tal._on_task_submitted(task)
            tal._on_task_state_change(task, "RUNNING")
            tal._on_task_state_change(task, "DONE")
            if i % 1000 == 999:
                await asyncio.sleep(0)  # the TAL drains on this loop, as in AsyncFlow
        await tal.stop()
        cpu[1] = time.process_time()
        return time.perf_counter() - t0

    cpu = [0.0, 0.0]
    total = asyncio.run(main())
    return {
        "n": n,
        "path": "rhapsody",
        "us_per_task_end_to_end": total / n * 1e6,
        "cpu_us_per_task": (cpu[1] - cpu[0]) / n * 1e6,
        "caller_us_per_emit": float("nan"),
        "events_per_s": n * 4 / total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "throttled_s": 0.0,
        "lossless": True,  # not checked: the TAL keeps no count of what it lost
    }


def _lines(f: Path):
    """The lines of a run file, plain or zstd-compressed."""
    with open(f, "rb") as raw:
        if f.suffix == ".zst":
            import io

            import zstandard

            yield from io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
        else:
            yield from raw


def run_one(n: int, runs_dir: str, path: str = "tracker", **session: object) -> dict:
    if path == "rhapsody":
        return run_rhapsody(n, runs_dir)
    import otelflow

    tel = otelflow.start_telemetry(checkpoint_path=runs_dir, resource_poll_interval=0, environ={}, **session)
    trk = otelflow.tracker("bench")
    created, submitted, started, completed = trk.created, trk.submitted, trk.started, trk.completed
    if path == "task":
        return _run_task_path(n, tel)

    # Caller cost: a burst small enough to stay under the bus bound (no throttling). The
    # bound follows the dispatcher's rate (0.1 s of its work, never below 1024 events).
    burst = min(n, 250)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    t_first = t0
    with otelflow.workflow_scope("bench"):
        for i in range(burst):
            tid = created(f"b{i}", "noop")
            submitted(tid)
            started(tid)
            completed(tid)
        caller_us = (time.perf_counter() - t0) / (burst * 4) * 1e6
        for i in range(burst, n):
            tid = created(f"b{i}", "noop")
            submitted(tid)
            started(tid)
            completed(tid)
    t_emitted = time.perf_counter()
    summary = tel.stop()
    t_end = time.perf_counter()
    cpu = time.process_time() - cpu0
    total = t_end - t_first
    event_lines = span_lines = 0
    for f in [*Path(tel.run_dir).glob("*.jsonl"), *Path(tel.run_dir).glob("*.jsonl.zst")]:
        for line in _lines(f):
            if line.startswith(b'{"section":"event"'):
                event_lines += 1
            elif b'"kind":"task"' in line:
                span_lines += 1
    expected_events = n * 5 + 4  # 4 emitted + 1 derived TaskResolved per task; session/workflow events
    return {
        "n": n,
        "us_per_task_end_to_end": total / n * 1e6,
        "cpu_us_per_task": cpu / n * 1e6,
        "caller_us_per_emit": caller_us,
        "emit_phase_s": t_emitted - t_first,
        "stop_s": t_end - t_emitted,
        "events_per_s": n * 4 / total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "throttled_s": summary["dropped"]["throttled_s"],
        "dropped": summary["dropped"]["events"],
        "completed": summary["tasks"]["completed"],
        "event_lines": event_lines,
        "expected_event_lines": expected_events,
        "task_span_lines": span_lines,
        "lossless": summary["tasks"]["completed"] == n
        and summary["dropped"]["events"] == 0
        and span_lines == n
        and event_lines == expected_events,
    }


def _run_task_path(n: int, tel: Any) -> dict:
    import otelflow

    @otelflow.task(name="noop")
    def noop() -> None:
        pass

    burst = min(n, 250)  # fits the time-bounded bus (0.1 s of dispatcher work): no throttling
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    with otelflow.workflow_scope("bench"):
        for _ in range(burst):
            noop()
        caller_us = (time.perf_counter() - t0) / burst * 1e6  # per call: one task, 4 steps
        for _ in range(burst, n):
            noop()
    summary = tel.stop()
    total = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    span_lines = sum(1 for f in Path(tel.run_dir).glob("*.jsonl*") for line in _lines(f) if b'"kind":"task"' in line)
    return {
        "n": n,
        "path": "task",
        "us_per_task_end_to_end": total / n * 1e6,
        "cpu_us_per_task": cpu / n * 1e6,
        "caller_us_per_emit": caller_us,
        "events_per_s": n * 4 / total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "throttled_s": summary["dropped"]["throttled_s"],
        "lossless": summary["tasks"]["completed"] == n and summary["dropped"]["events"] == 0 and span_lines == n,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, action="append", help="task count (repeatable)")
    ap.add_argument("--path", action="append", choices=("tracker", "task", "rhapsody"), help="(repeatable)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = args.n or [10_000, 100_000, 1_000_000]
    paths = args.path or ["tracker"]
    if args.child:
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(run_one(sizes[0], d, paths[0])))
        return 0
    rows = []
    for n in sizes:
        for path in paths:
            out = subprocess.run(
                [sys.executable, __file__, "--child", "--n", str(n), "--path", path],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONHASHSEED": "0"},
            )
            rows.append({"path": path, **json.loads(out.stdout.strip().splitlines()[-1])})
    hdr = (
        f"{'path':>9} {'N':>9} {'µs/task e2e':>12} {'CPU µs/task':>12} {'µs/emit':>8} {'events/s':>10} "
        f"{'peak RSS MB':>12} {'throttled s':>12} lossless"
    )
    print(hdr)
    for r in rows:
        print(
            f"{r['path']:>9} {r['n']:>9} {r['us_per_task_end_to_end']:>12.1f} {r['cpu_us_per_task']:>12.1f} "
            f"{r['caller_us_per_emit']:>8.2f} "
            f"{r['events_per_s']:>10.0f} {r['peak_rss_mb']:>12.1f} {r['throttled_s']:>12.2f} {r['lossless']}"
        )
    return 0 if all(r["lossless"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
