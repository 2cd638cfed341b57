"""``otelflow demo``: an instrumented demo workflow that needs no collector.

Runs several small ETL-style workflows (extract → transform → load, with dependencies
between tasks and one task that fails on purpose) on a thread pool, records them with
otelflow into a run directory, and prints what happened: task counts, durations, waits,
per-workflow totals, and where the files are.

Configure exporters with the usual environment variables (``OTEL_TRACES_EXPORTER``,
``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_METRICS_EXPORTER=prometheus`` …) to see the same
run in Jaeger, Tempo, Prometheus or Grafana.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import otelflow


def _work(seconds: float, payload: str) -> str:
    """A little CPU (hashing) and a little waiting, like a real I/O-bound task."""
    deadline = time.perf_counter() + seconds / 2
    h = hashlib.sha256(payload.encode())
    while time.perf_counter() < deadline:
        h.update(h.digest())
    time.sleep(seconds / 2)
    return h.hexdigest()[:12]


class _Engine:
    """A tiny dependency-aware engine on a thread pool, reporting to a TaskTracker."""

    def __init__(self, workers: int) -> None:
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="demo-worker")
        self.tracker = otelflow.tracker(backend="threads")
        self.lock = threading.Lock()

    def submit(
        self, name: str, seconds: float, deps: list[tuple[str, Future[str]]], fail: bool = False
    ) -> tuple[str, Future[str]]:
        tid = self.tracker.created(None, name, depends_on=[d for d, _ in deps])
        out: Future[str] = Future()
        remaining = [len(deps)]

        def launch() -> None:
            self.tracker.submitted(tid)
            self.pool.submit(run).add_done_callback(lambda f: None)

        def run() -> None:
            self.tracker.started(tid, worker=threading.current_thread().name)
            try:
                if fail:
                    raise RuntimeError(f"{name}: upstream record failed validation")
                result = _work(seconds, name)
            except Exception as exc:  # noqa: BLE001 - recorded, then surfaced on the future
                self.tracker.failed(tid, exc)
                out.set_exception(exc)
                return
            self.tracker.completed(tid)
            out.set_result(result)

        def upstream_done(_: Future[str]) -> None:
            with self.lock:
                remaining[0] -= 1
                ready = remaining[0] == 0
            if ready:
                if any(f.exception() is not None for _, f in deps):
                    self.tracker.canceled(tid, reason="an upstream task failed")
                    out.set_exception(RuntimeError(f"{name}: canceled, an upstream task failed"))
                else:
                    launch()

        if not deps:
            launch()
        for _, f in deps:
            f.add_done_callback(upstream_done)
        return tid, out

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def run_demo(tasks: int = 60, workflows: int = 3, workers: int = 4, seed: int = 7) -> None:
    """Run the demo workflows on the current telemetry (start one first)."""
    rng = random.Random(seed)
    engine = _Engine(workers)
    per_wf = max(3, tasks // max(1, workflows))
    futures: list[Future[str]] = []
    for w in range(workflows):
        with otelflow.workflow_scope(f"etl-{w}"):
            shards = max(1, per_wf // 3)
            with otelflow.block("extract"):
                extracted = [
                    engine.submit("extract", rng.uniform(0.01, 0.05), []) for _ in range(shards)
                ]
            with otelflow.block("transform"):
                transformed = [
                    engine.submit(
                        "transform",
                        rng.uniform(0.02, 0.08),
                        [extracted[i]],
                        fail=(w == workflows - 1 and i == shards - 1),
                    )
                    for i in range(shards)
                ]
            with otelflow.block("load"):
                loads = [engine.submit("load", rng.uniform(0.01, 0.03), [t]) for t in transformed]
                futures += [f for _, f in loads]
    for f in futures:
        try:
            f.result()
        except Exception:  # noqa: BLE001 - the failure is part of the demo
            pass
    engine.close()


def format_summary(summary: Mapping[str, Any]) -> str:
    """Render a summary() dict as a short, readable text report."""
    t = summary.get("tasks", {})

    def fmt(stats: dict[str, Any]) -> str:
        if not stats or not stats.get("count"):
            return "n/a"
        return (
            f"mean {stats['mean'] * 1000:.1f} ms · p50 {stats['p50'] * 1000:.1f} ms · "
            f"p95 {stats['p95'] * 1000:.1f} ms · max {stats['max'] * 1000:.1f} ms"
        )

    lines = [
        f"run {summary.get('run_id')}  ({summary.get('elapsed_s', 0):.2f} s)",
        f"  run directory   : {summary.get('run_dir')}",
        f"  tasks           : {t.get('created', 0)} created · {t.get('completed', 0)} completed · "
        f"{t.get('failed', 0)} failed · {t.get('canceled', 0)} canceled · {t.get('incomplete', 0)} incomplete",
        f"  execution       : {fmt(summary.get('duration_s', {}))}",
        f"  dependency wait : {fmt(summary.get('dependency_wait_s', {}))}",
        f"  dispatch wait   : {fmt(summary.get('dispatch_wait_s', {}))}",
        f"  queue wait      : {fmt(summary.get('queue_wait_s', {}))}",
        "  by task name    :",
    ]
    for name, stats in summary.get("by_task_name", {}).items():
        lines.append(f"    {name:<12} {stats['count']:>6} × {fmt(stats)}")
    lines.append("  workflows       :")
    for wid, wf in summary.get("workflows", {}).items():
        c = wf["tasks"]
        lines.append(
            f"    {wf['name']:<12} {wid:<14} {wf['status']:<10} {wf['duration_s']:.2f} s  "
            f"{c['completed']} ok · {c['failed']} failed · {c['canceled']} canceled"
        )
    dropped = {k: v for k, v in summary.get("dropped", {}).items() if v}
    lines.append(f"  losses          : {dropped or 'none'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``otelflow demo``."""
    ap = argparse.ArgumentParser(prog="otelflow demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=60, help="roughly how many tasks (default 60)")
    ap.add_argument("--workflows", type=int, default=3, help="how many workflows (default 3)")
    ap.add_argument("--workers", type=int, default=4, help="thread-pool size (default 4)")
    ap.add_argument("--runs-dir", default=None, help="runs directory (default $OTELFLOW_RUNS_DIR or ./.otelflow/runs)")
    ap.add_argument("--linger", type=float, default=0.0, help="keep serving metrics this many seconds afterwards")
    args = ap.parse_args(argv)
    if args.tasks < 1 or args.workflows < 1 or args.workers < 1:
        print("otelflow demo: --tasks, --workflows and --workers must be at least 1.", file=sys.stderr)
        return 2
    try:
        telemetry = otelflow.start_telemetry(checkpoint_path=args.runs_dir, resource_poll_interval=None)
    except otelflow.ConfigError as exc:
        print(f"otelflow demo: {exc}", file=sys.stderr)
        return 2
    print(f"otelflow demo: {args.workflows} workflows, ~{args.tasks} tasks on {args.workers} threads …")
    run_demo(args.tasks, args.workflows, args.workers)
    if args.linger > 0:
        print(f"otelflow demo: lingering {args.linger:g} s so metrics can be scraped …")
        time.sleep(args.linger)
    summary = telemetry.stop()
    print(format_summary(summary))
    if summary.get("run_dir"):
        print(f"\nnext: otelflow report {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
