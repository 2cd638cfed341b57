"""Reading benchmark: ``otelflow report`` (and other commands) on a large run directory.

Makes the run once with the real session (the same N-task flood as
``bench_pipeline.py``: TaskCreated, TaskSubmitted, TaskStarted, TaskCompleted per task),
then runs the command in a fresh process per repeat and reports its wall time and peak
RSS (from ``wait4``, so only that process counts), plus the run directory's bytes per
task on disk.

    python bench/bench_report.py --make 1000000 --dir /tmp/run1m    # once (~40 s, ~2.2 GB)
    python bench/bench_report.py --make 1000000 --dir /tmp/run1mz --compression zstd
    python bench/bench_report.py --dir /tmp/run1m                   # report, 3 repeats
    python bench/bench_report.py --dir /tmp/run1m --cmd plot --cmd export
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_run(n: int, runs_dir: Path, compression: str = "none") -> Path:
    """Record an ``n``-task run into ``runs_dir`` with the real session; return its directory."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_pipeline

    result = bench_pipeline.run_one(n, str(runs_dir), jsonl_compression=compression)
    if not result["lossless"]:
        raise SystemExit(f"the recorded run lost lines: {result}")
    runs = sorted(p for p in runs_dir.iterdir() if (p / "run.json").is_file())
    return runs[-1]


def _files_of(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.iterdir() if p.name.endswith((".jsonl", ".jsonl.zst"))]


def time_command(argv: list[str]) -> tuple[float, float]:
    """Run ``argv`` with stdout discarded; return (wall seconds, peak RSS MB)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {proc.returncode}")
    return wall, usage.ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make", type=int, metavar="N", help="first record an N-task run into --dir")
    ap.add_argument("--dir", type=Path, help="the runs directory (default: a temporary one with --make)")
    ap.add_argument("--compression", choices=("none", "zstd"), default="none", help="with --make: the JSONL form")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--cmd",
        action="append",
        choices=("report", "plot", "export-html", "export-chrome", "export-csv", "history"),
        help="what to time (repeatable; default report)",
    )
    args = ap.parse_args()
    runs_dir = args.dir or Path(tempfile.mkdtemp(prefix="otelflow-bench-"))
    runs_dir.mkdir(parents=True, exist_ok=True)
    if args.make:
        run_dir = make_run(args.make, runs_dir, args.compression)
        print(f"recorded {args.make} tasks into {run_dir}")
    runs = sorted(p for p in runs_dir.iterdir() if (p / "run.json").is_file())
    if not runs:
        raise SystemExit(f"no run in {runs_dir}: make one with --make N")
    run_dir = runs[-1]
    size = sum(p.stat().st_size for p in _files_of(run_dir))
    import json

    tasks = json.loads((run_dir / "run.json").read_text()).get("summary", {}).get("tasks", {}).get("created") or 0
    per_task = f", {size / tasks:.0f} bytes per task" if tasks else ""
    print(f"run {run_dir.name}: {tasks} tasks, {size / 1e6:.1f} MB on disk{per_task}")
    out = Path(tempfile.mkdtemp(prefix="otelflow-bench-out-"))
    py = [sys.executable, "-m", "otelflow"]
    commands = {
        "report": [*py, "report", str(run_dir)],
        "plot": [*py, "plot", str(run_dir), "--out", str(out / "d.png")],
        "export-html": [*py, "export", str(run_dir), "--format", "html", "--output", str(out / "g.html")],
        "export-chrome": [*py, "export", str(run_dir), "--format", "chrome", "--output", str(out / "t.json")],
        "export-csv": [*py, "export", str(run_dir), "--format", "csv", "--output", str(out / "tasks.csv")],
        "history": [*py, "history", str(runs_dir)],
    }
    print(f"{'command':<14} {'wall s (each)':<28} {'peak RSS MB (max)':>18}")
    for name in args.cmd or ["report"]:
        walls, rss = [], []
        for _ in range(args.repeat):
            w, r = time_command(commands[name])
            walls.append(w)
            rss.append(r)
        print(f"{name:<14} {', '.join(f'{w:.1f}' for w in walls):<28} {max(rss):>18.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
