"""AsyncFlow benchmark: no-op tasks with no telemetry, with the RHAPSODY TAL, with otelflow.

In one process: N no-op tasks with no dependencies, and a chain of C tasks (each depends on
the one before), on AsyncFlow's ``ConcurrentExecutionBackend`` with ``ThreadPoolExecutor(2)``
and ``ProcessPoolExecutor(2)``. Each (backend, shape) runs with

* ``none`` — no telemetry;
* ``tal`` — ``await flow.start_telemetry(checkpoint_path=...)`` (RHAPSODY's telemetry layer,
  JSONL checkpoint on); its time includes ``await tal.stop()``, which drains its queue and
  writes the file — the TAL has no other way to say it is done;
* ``otelflow`` — ``otelflow.instrument(flow)`` on one telemetry run (JSONL, spans and
  metrics on; resource sampling off for both); its time includes ``telemetry.flush()``.

Every measurement gets a fresh engine and pool, warmed up before the clock starts; modes
alternate within each round so drift hits them alike. Reported: the median of the rounds,
seconds, and µs per task added over ``none`` — in wall time, and in CPU time of this
process (all its threads; steadier than wall time on a shared machine, but it does not see
the pool's worker processes).

AsyncFlow's scheduler polls: a dependent is dispatched 10 ms–1 s after its upstream ends,
so a chain takes far longer than its tasks; keep ``--chain`` small.

    python bench/bench_asyncflow.py                          # N = 2000, C = 200, 3 rounds
    python bench/bench_asyncflow.py --tasks 500 --chain 50 --rounds 1 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import otelflow  # after the path fix above, so the checkout is benchmarked

MODES = ("none", "tal", "otelflow")


async def noop(*_upstream: Any) -> None:
    return None


def _pool(kind: str) -> Executor:
    return ThreadPoolExecutor(2) if kind == "threads" else ProcessPoolExecutor(2)


async def _engine(kind: str, work_dir: str) -> Any:
    from radical.asyncflow import WorkflowEngine
    from rhapsody.backends import ConcurrentExecutionBackend

    backend = await ConcurrentExecutionBackend(_pool(kind))
    return await WorkflowEngine.create(backend, work_dir=work_dir)


async def _workload(flow: Any, shape: str, n: int) -> None:
    task = flow.function_task(noop)
    if shape == "nodeps":
        await asyncio.gather(*(task() for _ in range(n)))
    else:
        t = task()
        for _ in range(n - 1):
            t = task(t)
        await t


async def measure(kind: str, shape: str, n: int, mode: str, tel: otelflow.Telemetry, tmp: str) -> tuple[float, float]:
    flow = await _engine(kind, tmp)
    tal = None
    if mode == "tal":
        tal = await flow.start_telemetry(checkpoint_path=tmp, resource_poll_interval=3600)
    elif mode == "otelflow":
        otelflow.instrument(flow)
    task = flow.function_task(noop)
    await asyncio.gather(*(task() for _ in range(8)))  # start the workers: not what is measured
    if mode == "otelflow":
        tel.flush(timeout=None)
    t0, c0 = time.perf_counter(), time.process_time()
    await _workload(flow, shape, n)
    if tal is not None:
        await tal.stop()
    elif mode == "otelflow":
        tel.flush(timeout=None)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    await flow.shutdown()
    return elapsed, cpu


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tel = otelflow.start_telemetry(checkpoint_path=str(Path(tmp) / "runs"), resource_poll_interval=0, environ={})
        try:
            for kind in args.backends.split(","):
                for shape, n in (("nodeps", args.tasks), ("chain", args.chain)):
                    times: dict[str, list[float]] = {m: [] for m in MODES}
                    cpus: dict[str, list[float]] = {m: [] for m in MODES}
                    for _ in range(args.rounds):
                        for mode in MODES:
                            wall, cpu = await measure(kind, shape, n, mode, tel, tmp)
                            times[mode].append(wall)
                            cpus[mode].append(cpu)
                    med = {m: statistics.median(v) for m, v in times.items()}
                    cpu_med = {m: statistics.median(v) for m, v in cpus.items()}
                    row: dict[str, Any] = {"backend": kind, "shape": shape, "tasks": n}
                    for m in MODES:
                        row[f"{m}_s"] = round(med[m], 3)
                        row[f"{m}_cpu_s"] = round(cpu_med[m], 3)
                    for m in ("tal", "otelflow"):
                        row[f"{m}_us_per_task"] = round((med[m] - med["none"]) / n * 1e6, 1)
                        row[f"{m}_pct"] = round((med[m] / med["none"] - 1) * 100, 1)
                        row[f"{m}_cpu_us_per_task"] = round((cpu_med[m] - cpu_med["none"]) / n * 1e6, 1)
                    row["rounds"] = {m: [round(t, 3) for t in v] for m, v in times.items()}
                    rows.append(row)
                    if not args.json:
                        print(_fmt(row), flush=True)
        finally:
            tel.stop()
    return rows


def _fmt(r: dict[str, Any]) -> str:
    return (
        f"{r['backend']:9} {r['shape']:6} n={r['tasks']:<5} none {r['none_s']:7.3f}s  "
        f"TAL {r['tal_s']:7.3f}s ({r['tal_pct']:+5.1f}%, {r['tal_us_per_task']:+7.1f} µs/task)  "
        f"otelflow {r['otelflow_s']:7.3f}s ({r['otelflow_pct']:+5.1f}%, {r['otelflow_us_per_task']:+7.1f} µs/task)  "
        f"CPU µs/task here: TAL {r['tal_cpu_us_per_task']:+.1f}, otelflow {r['otelflow_cpu_us_per_task']:+.1f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=2000, help="tasks without dependencies (default 2000)")
    p.add_argument("--chain", type=int, default=200, help="tasks in the chain (default 200)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported (default 3)")
    p.add_argument("--backends", default="threads,processes", help="threads,processes (default both)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()
    if not args.json:
        print(f"python {platform.python_version()}, {platform.machine()}, rounds={args.rounds}")
    rows = asyncio.run(run(args))
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
