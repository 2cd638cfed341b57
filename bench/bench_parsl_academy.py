"""Parsl and Academy benchmark: no-op apps and actions, with and without otelflow.

* Parsl: N no-op python apps on ``ThreadPoolExecutor(4)`` and on HTEX with 2 workers
  (one DFK each, warmed up), all submitted then all awaited. The same DFK alternates
  plain and instrumented rounds (``otelflow.instrument`` / ``uninstrument``), so drift
  hits both alike.
* Academy: N no-op actions (50 in flight at a time) from this process to an agent in its
  own (spawned) process over a local HTTP exchange, with ``log_config=None`` and with
  :class:`~otelflow.integrations.academy.OtelflowLogConfig`; one Manager per round (agent
  start-up is not timed).

A measurement is wall time from the first submit to the last result; for instrumented
rounds the time telemetry then needs to write everything (``telemetry.flush()``) is added.
Reports the median of the rounds, the ratio to plain and µs added per task; for Parsl also
the CPU time this (submitting) process added per task, which a loaded machine distorts less.

    python bench/bench_parsl_academy.py                 # N = 1000, 3 rounds
    python bench/bench_parsl_academy.py --tasks 200 --rounds 1 --only threads
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import otelflow  # noqa: E402 - after the path fix above, so the checkout is benchmarked


def _parsl_rounds(kind: str, n: int, rounds: int, tel: otelflow.Telemetry, tmp: Path) -> dict[str, list[float]]:
    import parsl
    from bench_parsl_apps import noop
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor
    from parsl.providers import LocalProvider

    if kind == "threads":
        executor: Any = ThreadPoolExecutor(max_threads=4, label="threads")
    else:
        os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(Path(__file__).parent)])
        executor = HighThroughputExecutor(
            label="htex", address="127.0.0.1", max_workers_per_node=2, encrypted=False,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
        )  # fmt: skip
    dfk = parsl.load(Config(executors=[executor], run_dir=str(tmp / f"runinfo-{kind}"), strategy_period=0.5))
    times: dict[str, list[float]] = {"plain": [], "otelflow": [], "plain_cpu": [], "otelflow_cpu": []}
    try:
        for f in [noop() for _ in range(200)]:  # workers up, code paths warm
            f.result()
        for _ in range(rounds):
            for mode in ("plain", "otelflow"):
                if mode == "otelflow":
                    otelflow.instrument(dfk)
                t0, c0 = time.perf_counter(), time.process_time()
                futures = [noop() for _ in range(n)]
                for f in futures:
                    f.result()
                if mode == "otelflow":
                    tel.flush()
                    otelflow.uninstrument(dfk)
                times[mode].append(time.perf_counter() - t0)
                times[mode + "_cpu"].append(time.process_time() - c0)
    finally:
        dfk.cleanup()
        parsl.clear()
    return times


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _academy_round(factory: Any, n: int, with_otelflow: bool, tel: otelflow.Telemetry) -> float:
    from academy.manager import Manager
    from bench_parsl_apps import Noop

    from otelflow.integrations.academy import OtelflowLogConfig

    log_config = OtelflowLogConfig() if with_otelflow else None
    pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
    async with await Manager.from_exchange_factory(factory, executors=pool, log_config=log_config) as manager:
        agent = await manager.launch(Noop)
        await asyncio.gather(*(agent.noop() for _ in range(50)))  # the agent is up and warm
        t0 = time.perf_counter()
        for start in range(0, n, 50):
            await asyncio.gather(*(agent.noop() for _ in range(min(50, n - start))))
        if log_config is not None:
            log_config.close()  # every action recorded
            tel.flush()
        elapsed = time.perf_counter() - t0
        await manager.shutdown(agent, blocking=True)
    pool.shutdown()
    return elapsed


def _academy_rounds(n: int, rounds: int, tel: otelflow.Telemetry) -> dict[str, list[float]]:
    from academy.exchange.cloud.client import spawn_http_exchange

    times: dict[str, list[float]] = {"plain": [], "otelflow": []}
    with spawn_http_exchange("127.0.0.1", _free_port()) as factory:
        for _ in range(rounds):
            for mode in ("plain", "otelflow"):
                times[mode].append(asyncio.run(_academy_round(factory, n, mode == "otelflow", tel)))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["threads", "htex", "academy"], action="append")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cases = args.only or ["threads", "htex", "academy"]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, otelflow.start_telemetry(
        checkpoint_path=str(Path(tmp) / "runs"), resource_poll_interval=0
    ) as tel:
        for case in cases:
            if case == "academy":
                times = _academy_rounds(args.tasks, args.rounds, tel)
            else:
                times = _parsl_rounds(case, args.tasks, args.rounds, tel, Path(tmp))
            plain, inst = statistics.median(times["plain"]), statistics.median(times["otelflow"])
            cpu = {}
            if times.get("plain_cpu"):
                p_cpu, o_cpu = statistics.median(times["plain_cpu"]), statistics.median(times["otelflow_cpu"])
                cpu = {"added_cpu_us_per_task": round((o_cpu - p_cpu) / args.tasks * 1e6, 1)}
            results[case] = {
                "tasks": args.tasks,
                "rounds": args.rounds,
                "plain_s": round(plain, 4),
                "otelflow_s": round(inst, 4),
                "ratio": round(inst / plain, 3),
                "added_us_per_task": round((inst - plain) / args.tasks * 1e6, 1),
                **cpu,
                "all_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
            }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'case':10} {'tasks':>6} {'plain':>9} {'otelflow':>9} {'ratio':>7} {'µs/task':>8} {'cpu µs/task':>12}")
    for case, r in results.items():
        cpu_us = r.get("added_cpu_us_per_task")
        print(
            f"{case:10} {r['tasks']:>6} {r['plain_s']:>8.3f}s {r['otelflow_s']:>8.3f}s "
            f"{r['ratio']:>7.3f} {r['added_us_per_task']:>8.1f} {'-' if cpu_us is None else cpu_us:>12}"
        )


if __name__ == "__main__":
    main()
