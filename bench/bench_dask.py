"""Dask benchmark: N tiny tasks on LocalCluster(2 workers), with and without otelflow.

Two LocalClusters (2 worker processes, 1 thread each) run side by side in one process:
one never sees otelflow, the other has a client instrumented with
``otelflow.instrument(client)`` (one telemetry run: JSONL, spans and metrics on, resource
monitor off). Rounds alternate plain / instrumented so drift hits both alike. A
measurement is wall time from ``client.map(inc, ...)`` to the last result; for the
instrumented cluster, the time until every record of the round is on the telemetry's bus
and written (``recorder.flush()`` + ``telemetry.flush()``) is added, so it is end to end.

Reports the median of the rounds for each, the ratio, and µs added per task. On a shared
2-core machine Dask's own round-to-round noise can be larger than otelflow's cost, so it
also reports CPU time, which waiting for a core does not inflate:

* **loop**: CPU of otelflow's code on the scheduler/client event loop — the scheduler
  plugin's hooks and the client's record handler, each wrapped with a thread-CPU timer (in
  a LocalCluster both run on the loop thread that schedules every task);
* **pipeline**: CPU of otelflow's own threads in this process (dispatcher: trace tree,
  metrics, JSONL);
* **workers**: CPU of the worker processes per task, plain vs instrumented cluster.

    python bench/bench_dask.py                      # N = 5 000, 3 rounds
    python bench/bench_dask.py --tasks 1000 --rounds 1 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import otelflow  # after the path fix above, so the checkout is benchmarked


def inc(x: int) -> int:
    return x + 1


def one_round(client: Any, start: int, n: int, after: Any = None) -> float:
    t0 = time.perf_counter()
    futs = client.map(inc, range(start, start + n))
    client.gather(futs)
    if after is not None:
        after()
    elapsed = time.perf_counter() - t0
    del futs
    return elapsed


class _Timed:
    """Accumulates the time spent in wrapped callables."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.depth = 0  # only the outermost call counts (a flush inside a transition)

    def wrap(self, obj: Any, name: str) -> None:
        setattr(obj, name, self.timed(getattr(obj, name)))

    def timed(self, fn: Any) -> Any:
        def call(*a: Any, **kw: Any) -> Any:
            self.depth += 1
            t0 = time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self.seconds += time.thread_time() - t0

        return call


def otelflow_threads_cpu() -> float:
    """CPU seconds used so far by otelflow's own threads in this process (Linux)."""
    total = 0.0
    for t in threading.enumerate():
        if t.name.startswith("otelflow") and t.ident is not None:
            try:
                total += time.clock_gettime(time.pthread_getcpuclockid(t.ident))
            except (OSError, AttributeError):
                pass
    return total


def workers_cpu(client: Any) -> float:
    return float(sum(client.run(time.process_time).values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)

    import dask
    import distributed
    from distributed import Client, LocalCluster

    from otelflow.integrations.dask import recorder_of

    n = args.tasks
    kw: dict[str, Any] = {"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    with tempfile.TemporaryDirectory() as tmp:
        tel = otelflow.start_telemetry(checkpoint_path=tmp, resource_poll_interval=0)
        with LocalCluster(**kw) as plain_cluster, LocalCluster(**kw) as inst_cluster:
            plain = Client(plain_cluster, set_as_default=False)
            inst = Client(inst_cluster, set_as_default=False)
            otelflow.instrument(inst)
            rec = recorder_of(inst)
            assert rec is not None
            own = _Timed()
            plugin = inst_cluster.scheduler.plugins["otelflow"]
            for name in ("transition", "update_graph", "log_event"):
                own.wrap(plugin, name)
            inst.subscribe_topic(f"otelflow-{inst.id}", own.timed(rec.handle))

            def drain() -> None:
                rec.flush(timeout=60)
                tel.flush(timeout=60)

            # Warm both (worker imports, first-task costs are not what is measured).
            one_round(plain, -n, min(n, 500))
            one_round(inst, -n, min(n, 500), drain)
            times: dict[str, list[float]] = {"plain": [], "otelflow": []}
            own.seconds = 0.0
            pipe0 = otelflow_threads_cpu()
            wcpu = {"plain": 0.0, "otelflow": 0.0}
            for r in range(args.rounds):
                base = r * n
                c0 = workers_cpu(plain)
                times["plain"].append(one_round(plain, base, n))
                wcpu["plain"] += workers_cpu(plain) - c0
                c0 = workers_cpu(inst)
                times["otelflow"].append(one_round(inst, base, n, drain))
                wcpu["otelflow"] += workers_cpu(inst) - c0
            pipeline = otelflow_threads_cpu() - pipe0
            plain.close()
            inst.close()
        summary = tel.stop()

    med_plain = statistics.median(times["plain"])
    med_inst = statistics.median(times["otelflow"])
    result = {
        "tasks": n,
        "rounds": args.rounds,
        "plain_s": [round(t, 3) for t in times["plain"]],
        "otelflow_s": [round(t, 3) for t in times["otelflow"]],
        "median_plain_s": round(med_plain, 3),
        "median_otelflow_s": round(med_inst, 3),
        "ratio": round(med_inst / med_plain, 3),
        "us_added_per_task": round((med_inst - med_plain) / n * 1e6, 1),
        "loop_cpu_us_per_task": round(own.seconds / (n * args.rounds) * 1e6, 1),
        "pipeline_cpu_us_per_task": round(pipeline / (n * args.rounds) * 1e6, 1),
        "workers_cpu_us_per_task_plain": round(wcpu["plain"] / (n * args.rounds) * 1e6, 1),
        "workers_cpu_us_per_task_otelflow": round(wcpu["otelflow"] / (n * args.rounds) * 1e6, 1),
        "tasks_recorded": summary["tasks"]["completed"],
        "python": platform.python_version(),
        "dask": dask.__version__,
        "distributed": distributed.__version__,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{n} tasks (inc) on LocalCluster(2 workers x 1 thread), {args.rounds} rounds, median")
    print(f"  plain     {med_plain:7.3f} s   rounds: {result['plain_s']}")
    print(f"  otelflow  {med_inst:7.3f} s   rounds: {result['otelflow_s']}")
    print(f"  ratio {result['ratio']:.3f}   added per task {result['us_added_per_task']} µs")
    print("  CPU µs per task:")
    print(f"    otelflow on the scheduler/client loop  {result['loop_cpu_us_per_task']}")
    print(f"    otelflow's pipeline threads            {result['pipeline_cpu_us_per_task']}")
    print(
        f"    workers: plain {result['workers_cpu_us_per_task_plain']}, "
        f"instrumented {result['workers_cpu_us_per_task_otelflow']}"
    )
    print(f"  tasks recorded: {result['tasks_recorded']} (incl. warm-up)")


if __name__ == "__main__":
    main()
