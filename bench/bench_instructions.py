"""Instructions per task through the tracker and the dispatcher, counted by callgrind.

Wall-clock time on a shared or virtual machine varies by ±20 % between identical runs;
an instruction count does not. This runs N tasks (created, submitted, started,
completed) through a tracker with the events collected, then handles them on this thread
with the dispatcher's own handler (trace tree, task span line, five event lines, metric
aggregates), under ``valgrind --tool=callgrind`` at two sizes, and prints the difference
per task — start-up and shutdown cancel out.

    python bench/bench_instructions.py                     # caller + dispatcher
    python bench/bench_instructions.py --caller-only       # the four tracker calls alone
    python bench/bench_instructions.py --off metrics --off event-lines   # a stage switched off
    python bench/bench_instructions.py --executor processes   # a real ProcessPoolExecutor(2)

``--executor processes`` (or ``threads``) runs no-op tasks on a real pool of 2, plain and
``otelflow.instrument``-ed, and prints instructions per task in the submitting process
(all its threads: submit, the pool's feeder and result threads, otelflow's dispatcher) and
in the worker processes (0 for threads, which run in the submitting process), and what
instrumenting added to each.

Needs ``valgrind`` (Debian: ``apt install valgrind``); takes about 30 s (``--executor``:
about 2 min).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

STAGES = ("metrics", "event-lines", "span-line", "span-attributes")


def child(n: int, caller_only: bool, off: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import otelflow

    with tempfile.TemporaryDirectory() as runs:
        tel = otelflow.start_telemetry(checkpoint_path=runs, resource_poll_interval=0, environ={})
        dispatcher = tel._dispatcher  # the benchmark drives the handler itself
        events: list[object] = []
        put = tel.bus_put
        tel.bus_put = events.append  # type: ignore[method-assign]
        trk = otelflow.tracker("bench", telemetry=tel)
        with otelflow.workflow_scope("bench"):
            for i in range(n):
                tid = trk.created(f"x{i}", "noop")
                trk.submitted(tid)
                trk.started(tid)
                trk.completed(tid)
        tel.bus_put = put  # type: ignore[method-assign]
        tel.flush(30)
        tree = dispatcher.tree
        if "metrics" in off:
            tree.recorder.task_finished = lambda *a: None  # type: ignore[method-assign]
        if "event-lines" in off and dispatcher.jsonl is not None:
            dispatcher.jsonl.write_event = lambda *a: None  # type: ignore[method-assign]
        if "span-line" in off:
            tree.spans._write_task_span = lambda *a: None  # type: ignore[method-assign]
        if "span-attributes" in off:
            tree.spans.task_attributes = lambda *a: {}  # type: ignore[method-assign]
        if not caller_only:
            handle = dispatcher._handle
            for ev in events:
                handle(ev)
        tel.stop()


def noop() -> None:
    return None


def pool_child(n: int, executor: str, instrumented: bool) -> None:
    import multiprocessing as mp
    from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import otelflow

    def run(pool: Executor, count: int) -> None:
        for f in [pool.submit(noop) for _ in range(count)]:
            f.result()

    with tempfile.TemporaryDirectory() as runs:
        tel = otelflow.start_telemetry(checkpoint_path=runs, resource_poll_interval=0, environ={})
        if executor == "processes":
            pool: Executor = ProcessPoolExecutor(2, mp_context=mp.get_context("fork"))
        else:
            pool = ThreadPoolExecutor(2)
        if instrumented:
            pool = otelflow.instrument(pool)
        run(pool, 100)  # the workers start, and each joins the run, before the measured tasks
        with otelflow.workflow_scope("bench"):
            run(pool, n)
        tel.flush(60)
        pool.shutdown()
        tel.stop()


def count_pool(n: int, executor: str, instrumented: bool) -> tuple[int, int]:
    """Instructions (submitting process, all workers) for a run of ``n`` tasks."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, __file__, "--pool-child", str(n), "--executor", executor]
        if instrumented:
            cmd.append("--instrumented")
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p", *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"the pool run failed:\n{err.decode(errors='replace')[-2000:]}")
        parent = workers = 0
        for f in Path(out).glob("cg.*"):
            m = re.search(r"^summary: (\d+)", f.read_text(errors="replace"), re.MULTILINE)
            if m is None:
                continue
            if f.name == f"cg.{proc.pid}":  # valgrind runs the program in its own process
                parent = int(m.group(1))
            else:
                workers += int(m.group(1))
        return parent, workers


def pool_report(args: argparse.Namespace) -> None:
    small, large = 200, 200 + args.tasks
    rows = {}
    for instrumented in (False, True):
        a = count_pool(small, args.executor, instrumented)
        b = count_pool(large, args.executor, instrumented)
        rows[instrumented] = [(b[i] - a[i]) / args.tasks for i in range(2)]
    how = "pool of 2, fork" if args.executor == "processes" else "pool of 2"
    print(f"instructions per no-op task on {args.executor} ({how}):")
    print(f"{'':24} {'submitting process':>19} {'workers':>10}")
    for label, key in (("plain", False), ("instrumented", True)):
        print(f"{label:24} {rows[key][0]:19,.0f} {rows[key][1]:10,.0f}")
    added = [rows[True][i] - rows[False][i] for i in range(2)]
    print(f"{'added by otelflow':24} {added[0]:19,.0f} {added[1]:10,.0f}")


def count(n: int, args: argparse.Namespace) -> int:
    cmd = [sys.executable, __file__, "--child", str(n)]
    if args.caller_only:
        cmd.append("--caller-only")
    for stage in args.off or ():
        cmd += ["--off", stage]
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    m = re.search(r"Collected : (\d+)", out.stderr)
    if m is None:
        raise SystemExit(f"callgrind printed no instruction count:\n{out.stderr[-2000:]}")
    return int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--caller-only", action="store_true", help="count the tracker calls only")
    ap.add_argument("--off", action="append", choices=STAGES, help="switch a dispatcher stage off (repeatable)")
    ap.add_argument("--tasks", type=int, default=2000, help="tasks in the difference (default 2000)")
    ap.add_argument("--executor", choices=("processes", "threads"), help="no-op tasks on a real pool of 2")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--pool-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--instrumented", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.caller_only, args.off or [])
        return 0
    if args.pool_child is not None:
        pool_child(args.pool_child, args.executor, args.instrumented)
        return 0
    if shutil.which("valgrind") is None:
        print("bench_instructions needs valgrind: apt install valgrind", file=sys.stderr)
        return 2
    if args.executor is not None:
        pool_report(args)
        return 0
    small, large = 200, 200 + args.tasks
    per_task = (count(large, args) - count(small, args)) / args.tasks
    what = "caller" if args.caller_only else "caller + dispatcher"
    off = f", off: {', '.join(args.off)}" if args.off else ""
    print(f"instructions per task ({what}{off}): {per_task:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
