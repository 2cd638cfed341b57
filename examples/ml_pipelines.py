"""Six ML pipelines in parallel on a process pool, recorded by otelflow.

Each pipeline is one workflow (``pipeline-0`` … ``pipeline-5``) of four stages, each stage a
block: ``load`` (``tasks_scale`` shards) → ``preprocess`` (all shards: a *list of futures*
as the argument) → ``train`` (``tasks_scale`` trials; a future argument) → ``evaluate``
(every trial, plus an explicit ``depends_on``). Everything is submitted at once; the
instrumented ``ProcessPoolExecutor`` holds each task until its upstream futures are done.
Inside ``train``, each epoch is a user OTel span (a child of the task span, written by the
worker process) and an ``ml_pipelines.EpochEnd`` event.

The work is small pure-Python CPU work with short sleeps (no numpy), so the whole run takes
a few seconds. Afterwards the run directory holds the four-level tree (session → workflow
→ block → task, plus the epoch spans under the train tasks), and the summary printed here
shows, per stage, the execution time and the time tasks waited for their dependencies and
for a free worker.

    python examples/ml_pipelines.py                       # ./.otelflow/runs/<run-id>/
    python examples/ml_pipelines.py --runs-dir /tmp/runs --scale 2 --workers 2
    otelflow report                                       # then look at the run

From Python: ``run(runs_dir, tasks_scale=1, workers=2)`` returns the summary dict. Worker
processes are forked where the platform allows it, so the task functions need not be
importable by name; with ``start_method="spawn"`` (or ``"forkserver"``) import this file
as a module (``sys.modules`` must know it) before calling :func:`run`.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from opentelemetry import trace

import otelflow

STAGES = ("load", "preprocess", "train", "evaluate")
PIPELINES = 6
EPOCHS = 5
STEPS_PER_EPOCH = 1000

EpochEnd = otelflow.define_event("ml_pipelines.EpochEnd", epoch=int, loss=float)


# --- the tasks (run in worker processes) -----------------------------------------------------


def load(pipeline: int, shard: int) -> list[tuple[float, float]]:
    """Read a shard: a short wait (I/O) and 400 noisy points of y = a·x + b."""
    time.sleep(0.1)
    rng = random.Random(pipeline * 1000 + shard)
    a, b = 1.0 + pipeline * 0.5, -2.0 + pipeline
    return [(x, a * x + b + rng.gauss(0, 0.3)) for x in (rng.uniform(-3, 3) for _ in range(400))]


def preprocess(shards: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Merge the shards and standardise x."""
    rows = [row for shard in shards for row in shard]
    mean = sum(x for x, _ in rows) / len(rows)
    std = math.sqrt(sum((x - mean) ** 2 for x, _ in rows) / len(rows)) or 1.0
    time.sleep(0.01)
    return [((x - mean) / std, y) for x, y in rows]


def train(data: list[tuple[float, float]], trial: int) -> dict[str, float]:
    """Fit y = w·x + c by gradient descent; one user span and one event per epoch."""
    tracer = trace.get_tracer("examples.ml")
    w = c = 0.0
    lr = 0.05 + 0.02 * trial
    loss = float("inf")
    for epoch in range(EPOCHS):
        with tracer.start_as_current_span("epoch", attributes={"ml.epoch": epoch, "ml.trial": trial}):
            for _ in range(STEPS_PER_EPOCH):
                gw = gc = 0.0
                for x, y in data:
                    err = w * x + c - y
                    gw += err * x
                    gc += err
                w -= lr * gw / len(data)
                c -= lr * gc / len(data)
            loss = sum((w * x + c - y) ** 2 for x, y in data) / len(data)
        otelflow.emit(EpochEnd(epoch=epoch, loss=round(loss, 6)))
    return {"w": w, "c": c, "loss": loss, "trial": trial}


def evaluate(models: list[dict[str, float]], data: list[tuple[float, float]]) -> dict[str, float]:
    """Pick the trial with the lowest error on every 4th point."""
    held_out = data[::4]
    best = min(models, key=lambda m: sum((m["w"] * x + m["c"] - y) ** 2 for x, y in held_out))
    time.sleep(0.01)
    return {"trial": best["trial"], "loss": best["loss"]}


# --- the driver ----------------------------------------------------------------------------------


def submit_pipeline(pool: ProcessPoolExecutor, i: int, scale: int) -> Any:
    """Submit one pipeline's tasks inside its workflow scope; return the evaluate future."""
    with otelflow.workflow_scope(f"pipeline-{i}"):
        with otelflow.block("load"):
            shards = [pool.submit(load, i, s) for s in range(scale)]
        with otelflow.block("preprocess"):
            clean = pool.submit(preprocess, shards)  # a list of futures: each is a dependency
        with otelflow.block("train"):
            models = [pool.submit(train, clean, t) for t in range(scale)]
        with otelflow.block("evaluate"):
            return pool.submit(evaluate, models, clean, depends_on=[clean])


def run(runs_dir: str, tasks_scale: int = 1, workers: int = 2, start_method: str | None = None) -> dict[str, Any]:
    """Run the six pipelines, record them under ``runs_dir``, and return a summary.

    Args:
        runs_dir: Runs directory; the run is written to ``<runs_dir>/<run-id>/``.
        tasks_scale: Shards per pipeline and training trials per pipeline (≥ 1).
        workers: Worker processes (at most 4 is plenty on a laptop).
        start_method: ``fork``, ``spawn`` or ``forkserver``; default ``fork`` where
            available (see the module docstring).

    Returns:
        ``run_id``, ``run_dir``, ``elapsed_s``, ``tasks`` (counts), ``stages`` (per stage:
        ``tasks``, mean ``execution_s``, mean ``dependency_wait_s``, mean
        ``scheduling_wait_s``), ``spans`` (count per kind), ``worker_files`` and the
        ``best`` trial of each pipeline.
    """
    scale = max(1, int(tasks_scale))
    if start_method is None:
        start_method = "fork" if "fork" in mp.get_all_start_methods() else None
    ctx = mp.get_context(start_method)
    t0 = time.perf_counter()
    with (
        otelflow.start_telemetry(checkpoint_path=runs_dir, resource_poll_interval=0.5) as tel,
        otelflow.instrument(ProcessPoolExecutor(workers, mp_context=ctx)) as pool,
    ):
        finals = [submit_pipeline(pool, i, scale) for i in range(PIPELINES)]
        best = {f"pipeline-{i}": f.result() for i, f in enumerate(finals)}
    elapsed = time.perf_counter() - t0
    out = summarize(Path(tel.run_dir))  # type: ignore[arg-type]
    out.update(
        run_id=tel.run_id,
        run_dir=str(tel.run_dir),
        elapsed_s=round(elapsed, 3),
        tasks={k: v for k, v in tel.summary()["tasks"].items() if k in ("created", "completed", "failed")},
        best=best,
    )
    return out


def summarize(run_dir: Path) -> dict[str, Any]:
    """Per-stage timings from the task spans in ``run_dir`` (read back from the JSONL)."""
    import json

    stages: dict[str, dict[str, list[float]]] = {}
    kinds: dict[str, int] = {}
    for path in sorted(run_dir.glob("*.jsonl")):
        for raw in path.read_bytes().splitlines():
            try:
                line = json.loads(raw)
            except ValueError:  # a torn last line
                continue
            if line.get("section") != "span":
                continue
            kind = line.get("kind", "?")
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind != "task":
                continue
            ev = dict(line["events"])
            stage = line["attributes"].get("otelflow.block.name", line["name"])
            row = stages.setdefault(stage, {"execution_s": [], "dependency_wait_s": [], "scheduling_wait_s": []})
            end = line["end_time"]
            if "TaskStarted" in ev:
                row["execution_s"].append((end - ev["TaskStarted"]) / 1e9)
                ready = ev.get("TaskResolved") or ev.get("TaskSubmitted") or ev["TaskCreated"]
                row["scheduling_wait_s"].append((ev["TaskStarted"] - ready) / 1e9)
            if "TaskResolved" in ev:
                row["dependency_wait_s"].append((ev["TaskResolved"] - ev["TaskCreated"]) / 1e9)

    def mean(v: list[float]) -> float | None:
        return round(sum(v) / len(v), 4) if v else None

    return {
        "stages": {
            s: {"tasks": len(stages[s]["execution_s"]), **{k: mean(v) for k, v in stages[s].items()}}
            for s in STAGES
            if s in stages
        },
        "spans": kinds,
        "worker_files": len(list(run_dir.glob("worker-*.jsonl"))),
    }


def print_summary(summary: dict[str, Any]) -> None:
    """Print a short table of the summary."""
    print(f"run {summary['run_id']} in {summary['elapsed_s']} s → {summary['run_dir']}")
    t = summary["tasks"]
    print(f"tasks: {t['completed']} completed, {t['failed']} failed; spans by kind: {summary['spans']}")
    print(f"{'stage':<11}{'tasks':>6}{'exec s':>9}{'dep wait s':>12}{'sched wait s':>14}")
    for stage, row in summary["stages"].items():
        cells = [row[k] for k in ("execution_s", "dependency_wait_s", "scheduling_wait_s")]
        print(
            f"{stage:<11}{row['tasks']:>6}"
            + "".join(f"{c if c is not None else '-':>{w}}" for c, w in zip(cells, (9, 12, 14), strict=True))
        )
    best = ", ".join(f"{p}: trial {r['trial']} (loss {r['loss']:.3f})" for p, r in summary["best"].items())
    print(f"best: {best}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Six parallel ML pipelines on a recorded process pool.")
    ap.add_argument("--runs-dir", default="./.otelflow/runs")
    ap.add_argument("--scale", type=int, default=1, help="shards and trials per pipeline (default 1)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--start-method", choices=mp.get_all_start_methods(), default=None)
    args = ap.parse_args(argv)
    print_summary(run(args.runs_dir, args.scale, args.workers, args.start_method))
    return 0


if __name__ == "__main__":
    sys.exit(main())
