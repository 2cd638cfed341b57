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

Needs ``valgrind`` (Debian: ``apt install valgrind``); takes about 30 s.
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
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.caller_only, args.off or [])
        return 0
    if shutil.which("valgrind") is None:
        print("bench_instructions needs valgrind: apt install valgrind", file=sys.stderr)
        return 2
    small, large = 200, 200 + args.tasks
    per_task = (count(large, args) - count(small, args)) / args.tasks
    what = "caller" if args.caller_only else "caller + dispatcher"
    off = f", off: {', '.join(args.off)}" if args.off else ""
    print(f"instructions per task ({what}{off}): {per_task:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
