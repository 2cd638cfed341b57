"""Soak: 10⁶ tasks with resource polling every 0.1 s and 4 subscribers, RSS sampled.

One process, one run: ``--tasks`` tasks (created → started → completed, in workflows of
10 000) from ``--threads`` producer threads, with the resource monitor at 0.1 s and four
subscribers counting what they receive. A sampler thread records the
process RSS every ``--sample`` seconds. Afterwards it checks, from the run directory:

* no lost and no duplicated records: exactly one TaskCreated/Started/Completed line and
  one task span per task, and every subscriber got every event;
* nothing dropped (``summary()["dropped"]``);
* otelflow's own metrics (``otelflow.telemetry.queue_depth``, ``events_dropped``,
  ``throttled``) are in the metric snapshots;
* RSS stays flat after warm-up: the growth from the end of the first quarter to the end
  is reported (``rss_growth_mb``) next to the samples.

    python bench/bench_soak.py                       # 10⁶ tasks (a few minutes)
    python bench/bench_soak.py --tasks 100000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec

import otelflow


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Counter:
    """A subscriber (on its own otelflow thread) that counts the task events it gets."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, ev: Any) -> None:
        if type(ev).__name__.startswith("Task"):
            self.n += 1


def soak(tasks: int, threads: int, sample_s: float, runs_dir: Path) -> dict[str, Any]:
    tel = otelflow.start_telemetry(
        checkpoint_path=runs_dir, resource_poll_interval=0.1, checkpoint_interval=1.0, environ={}
    )
    counters = [Counter() for _ in range(4)]
    for c in counters:
        otelflow.subscribe(c)
    samples: list[tuple[float, int]] = []
    done = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not done.wait(sample_s):
            samples.append((round(time.monotonic() - t0, 2), rss_bytes()))

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    per_thread = tasks // threads
    tr = otelflow.tracker("soak")

    def produce(k: int) -> None:
        for w in range(0, per_thread, 10_000):
            with otelflow.workflow_scope("soak"):
                for i in range(w, min(w + 10_000, per_thread)):
                    tid = tr.created(f"{k}-{i}", "unit")
                    tr.started(tid)
                    tr.completed(tid)

    workers = [threading.Thread(target=produce, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    produced_s = time.monotonic() - t0
    summary = tel.stop(timeout=120)
    total_s = time.monotonic() - t0
    done.set()
    sampler.join()
    samples.append((round(total_s, 2), rss_bytes()))
    return {
        "tel": tel,
        "summary": summary,
        "counters": [c.n for c in counters],
        "samples": samples,
        "produced_s": produced_s,
        "total_s": total_s,
        "tasks": per_thread * threads,
    }


def check(result: dict[str, Any]) -> dict[str, Any]:
    """Count every record in the run directory; return the figures and the problems."""
    tel = result["tel"]
    n = result["tasks"]
    decoder = msgspec.json.Decoder()
    seen: dict[str, set[str]] = {"TaskCreated": set(), "TaskStarted": set(), "TaskCompleted": set(), "span": set()}
    duplicates = 0
    events = 0
    own_metrics: set[str] = set()
    for f in Path(tel.run_dir).glob("*.jsonl"):
        with f.open("rb") as fh:
            for raw in fh:
                line = decoder.decode(raw)
                section = line.get("section")
                if section == "event":
                    kind = line.get("type")
                    events += str(kind).startswith("Task")
                    if kind in seen:
                        tid = line["task_id"]
                        duplicates += tid in seen[kind]
                        seen[kind].add(tid)
                elif section == "span" and line.get("kind") == "task":
                    tid = line["attributes"]["otelflow.task.id"]
                    duplicates += tid in seen["span"]
                    seen["span"].add(tid)
                elif section == "metric" and str(line.get("name", "")).startswith("otelflow.telemetry."):
                    own_metrics.add(line["name"])
    problems = []
    for kind, ids in seen.items():
        if len(ids) != n:
            problems.append(f"{kind}: {len(ids)} of {n}")
    if duplicates:
        problems.append(f"{duplicates} duplicated records")
    dropped = {k: v for k, v in result["summary"]["dropped"].items() if v and k != "throttled_s"}
    if dropped:
        problems.append(f"dropped: {dropped}")
    # Every subscriber got every task event (subscribed before the first task was made).
    for i, c in enumerate(result["counters"]):
        if c != events:
            problems.append(f"subscriber {i} got {c} of {events} task events")
    for name in ("otelflow.telemetry.queue_depth", "otelflow.telemetry.events_dropped", "otelflow.telemetry.throttled"):
        if name not in own_metrics:
            problems.append(f"metric {name} missing from the snapshots")
    samples = result["samples"]
    warm = samples[len(samples) // 4][1] if samples else 0
    peak = max(s[1] for s in samples) if samples else 0
    end = samples[-1][1] if samples else 0
    return {
        "tasks": n,
        "events": events,
        "produced_s": round(result["produced_s"], 2),
        "total_s": round(result["total_s"], 2),
        "tasks_per_s": round(n / result["total_s"]),
        "throttled_s": result["summary"]["dropped"]["throttled_s"],
        "rss_after_warmup_mb": round(warm / 2**20, 1),
        "rss_peak_mb": round(peak / 2**20, 1),
        "rss_end_mb": round(end / 2**20, 1),
        "rss_growth_mb": round((end - warm) / 2**20, 1),
        "rss_samples_mb": [(t, round(b / 2**20, 1)) for t, b in samples],
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=1_000_000)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--sample", type=float, default=0.5, help="seconds between RSS samples")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        figures = check(soak(args.tasks, args.threads, args.sample, Path(d)))
    if args.json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            if k != "rss_samples_mb":
                print(f"{k:22} {v}")
        print("rss samples (s, MB):", " ".join(f"{t}:{m}" for t, m in figures["rss_samples_mb"]))
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
