"""Executor benchmark: no-op tasks on plain vs instrumented thread and process pools.

In one process (one telemetry run): N no-op tasks on ``ThreadPoolExecutor(2)`` and on
``ProcessPoolExecutor(2)``, each plain and instrumented with ``otelflow.instrument``,
rounds alternating so drift hits both alike. A measurement is wall time from the first
``submit()`` to the last result; for the instrumented pool the time the telemetry then
needs to write everything (``telemetry.flush()``) is added, so the figure is end to end.
Process pools are measured with the worker session on (the default: user spans and events
inside tasks reach the run directory) and off (``worker_telemetry=False``: tasks are
only measured).

Reports, per case, the best round: seconds, µs per task, the ratio to plain, and µs added
per task; then the pieces an instrumented process-pool task adds, each timed alone. JSONL,
spans and metrics are on; the resource monitor is off.

    python bench/bench_executors.py                     # N = 10 000, 3 rounds
    python bench/bench_executors.py --tasks 2000 --rounds 1 --json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import otelflow  # after the path fix above, so the checkout is benchmarked


def noop() -> None:
    return None


def _run_tasks(pool: Executor, n: int) -> float:
    t0 = time.perf_counter()
    fs = [pool.submit(noop) for _ in range(n)]
    for f in fs:
        f.result()
    return time.perf_counter() - t0


def _warm(pool: Executor) -> None:
    # Start every worker (process start-up is not what is measured).
    for f in [pool.submit(time.sleep, 0.05) for _ in range(4)]:
        f.result()
    _run_tasks(pool, 200)


def measure(
    make: Callable[[], Executor], n: int, rounds: int, tel: otelflow.Telemetry, **inst: Any
) -> dict[str, float]:
    plain: list[float] = []
    instrumented: list[float] = []
    drain: list[float] = []
    with make() as pool_plain, otelflow.instrument(make(), **inst) as pool_inst:
        _warm(pool_plain)
        _warm(pool_inst)
        tel.flush()
        for _ in range(rounds):
            plain.append(_run_tasks(pool_plain, n))
            t = _run_tasks(pool_inst, n)
            t0 = time.perf_counter()
            tel.flush(timeout=None)
            d = time.perf_counter() - t0
            instrumented.append(t + d)
            drain.append(d)
    p, i = min(plain), min(instrumented)
    return {
        "plain_s": round(p, 4),
        "instrumented_s": round(i, 4),
        "drain_s": round(drain[instrumented.index(i)], 4),
        "plain_us_per_task": round(p / n * 1e6, 2),
        "instrumented_us_per_task": round(i / n * 1e6, 2),
        "ratio": round(i / p, 3),
        "added_us_per_task": round((i - p) / n * 1e6, 2),
    }


def breakdown(tel: otelflow.Telemetry, n: int = 20_000) -> dict[str, float]:
    """µs per task of the pieces an instrumented process-pool task adds, measured alone."""
    import pickle
    from concurrent.futures import Future

    from otelflow.integrations import _worker
    from otelflow.integrations.futures import _ChainedFuture, _copy_outcome

    def per(fn: Callable[[], Any], count: int = n) -> float:
        t0 = time.perf_counter()
        for _ in range(count):
            fn()
        return round((time.perf_counter() - t0) / count * 1e6, 2)

    trk = otelflow.tracker("bench")
    tel.flush()

    def lifecycle() -> None:
        tid = trk.created(None, "noop")
        trk.submitted(tid)
        trk.started(tid, worker="w", pid=1)
        trk.completed(tid, cpu_time_s=0.0, peak_rss_bytes=1)

    caller = per(lifecycle)
    t0 = time.perf_counter()
    tel.flush(timeout=None)
    dispatcher = round((time.perf_counter() - t0) / n * 1e6, 2)  # what was still queued
    from otelflow import toolkit

    cfg = toolkit.carrier(telemetry=tel)

    def proxy() -> None:
        p = _ChainedFuture()
        inner: Future[Any] = Future()
        p._attach(lambda: inner)
        inner.add_done_callback(lambda f: _copy_outcome(p, f))
        inner.set_result(None)

    plain_call = pickle.dumps(noop)
    wrapped = toolkit.Measured(noop, "t-1", cfg)
    outcome = toolkit.Returned(None, toolkit.Outcome(task_id="t-1", start_ns=1, end_ns=2, cpu_time_s=0.0, pid=2))
    return {
        "tracker_calls_in_caller_threads": caller,
        "dispatcher_per_task_left_after_burst": dispatcher,
        "traceparent": per(lambda: tel.task_traceparent("t-1")),
        "proxy_future_and_callbacks": per(proxy),
        "pickle_wrapped_call_extra": round(
            per(lambda: pickle.loads(pickle.dumps(wrapped))) - per(lambda: pickle.loads(plain_call)), 2
        ),
        "pickle_outcome_extra": per(lambda: pickle.loads(pickle.dumps(outcome))),
        "worker_cpu_and_peak_rss": per(lambda: _worker.ProcessUsage().end()),
        "worker_context_attach": per(_task_context_round_trip(cfg)),
        "worker_session_flush_round_trip": per(tel.flush, 2000),
    }


def _task_context_round_trip(cfg: Any) -> Any:
    from otelflow import toolkit

    def enter_and_exit() -> None:
        with toolkit.task_context(cfg, "t-1"):
            pass

    return enter_and_exit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--start-method", default="fork" if "fork" in mp.get_all_start_methods() else "spawn")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args()
    n, w = args.tasks, args.workers
    ctx = mp.get_context(args.start_method)

    with tempfile.TemporaryDirectory() as runs:
        tel = otelflow.start_telemetry(checkpoint_path=runs, resource_poll_interval=0, environ={})
        results = {
            "threads": measure(lambda: ThreadPoolExecutor(w), n, args.rounds, tel),
            "processes": measure(lambda: ProcessPoolExecutor(w, mp_context=ctx), n, args.rounds, tel),
            "processes (worker_telemetry=False)": measure(
                lambda: ProcessPoolExecutor(w, mp_context=ctx), n, args.rounds, tel, worker_telemetry=False
            ),
        }
        parts = breakdown(tel)
        summary = tel.stop()
    out = {
        "tasks": n,
        "workers": w,
        "rounds": args.rounds,
        "start_method": args.start_method,
        "python": platform.python_version(),
        "results": results,
        "breakdown_us": parts,
        "recorded_tasks": summary["tasks"]["completed"],
        "dropped": {k: v for k, v in summary["dropped"].items() if v},
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{n} no-op tasks, {w} workers, best of {args.rounds}, Python {out['python']}, {args.start_method}")
    print(f"{'case':38} {'plain µs/task':>14} {'instr. µs/task':>15} {'ratio':>7} {'added µs/task':>14}")
    for case, r in results.items():
        print(
            f"{case:38} {r['plain_us_per_task']:>14} {r['instrumented_us_per_task']:>15} "
            f"{r['ratio']:>7} {r['added_us_per_task']:>14}"
        )
    print(f"recorded tasks: {out['recorded_tasks']}, losses: {out['dropped'] or 'none'}")
    print("pieces, µs per task, measured alone:")
    for name, us in parts.items():
        print(f"  {name:40} {us:>7}")


if __name__ == "__main__":
    main()
