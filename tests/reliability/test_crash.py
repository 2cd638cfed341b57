"""Crash safety (issue 18, part 1): SIGKILL at random moments loses at most the last
~0.5 s; SIGTERM is finalized only when asked, and chained, never swallowed; atexit
flushes a program that ends without stop()."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

from otelflow.analysis import open_run
from tests.reliability.conftest import child_env, run_child, write_script

#: How long before a kill a completed task must already be on disk.
PROMISE_NS = 500_000_000

_FLOOD_CHILD = """
import sys, time, otelflow
mode = sys.argv[2]
tel = otelflow.start_telemetry(checkpoint_path=sys.argv[1], resource_poll_interval=0.1)
tr = otelflow.tracker("crash")
out = sys.stdout
i = 0
with otelflow.workflow_scope("crash"):
    while True:
        t = tr.created(f"t{i}", "work")
        tr.started(t)
        if mode == "normal":
            end = time.perf_counter() + 0.0005
            while time.perf_counter() < end:
                pass
        tr.completed(t)
        if i % 100 == 0:
            out.write(f"{i} {time.time_ns()}\\n")
            out.flush()
        i += 1
"""


def _progress(proc: subprocess.Popen[bytes], run_for: float, timeout: float = 60.0) -> list[tuple[int, int]]:
    """Read the child's progress lines ``(task index, completion time)`` until it has been
    working for ``run_for`` seconds (from its first line)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    got: list[tuple[int, int]] = []
    deadline = time.monotonic() + timeout
    until: float | None = None
    while until is None or time.monotonic() < until:
        left = deadline - time.monotonic()
        assert left > 0, "the child made no progress"
        ready, _, _ = select.select([fd], [], [], min(left, 0.05))
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        assert chunk, f"the child ended early: {proc.stderr.read() if proc.stderr else b''!r}"
        buf += chunk
        *complete, buf = buf.split(b"\n")
        for line in complete:
            i, t = line.split()
            got.append((int(i), int(t)))
        if until is None and got:
            until = time.monotonic() + run_for
    return got


@pytest.mark.parametrize("mode", ["flood", "normal"])
def test_sigkill_at_random_moments_loses_only_the_last_half_second(tmp_path, mode):
    rng = random.Random(f"otelflow-crash-{mode}")
    script = write_script(tmp_path, _FLOOD_CHILD)
    kills = 10  # per mode: 20 in all
    for n in range(kills):
        runs = tmp_path / f"runs-{n}"
        proc = subprocess.Popen(
            [sys.executable, str(script), str(runs), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(),
        )
        try:
            # a random moment: after a random amount of work (the 0.5 s promise needs some)
            progress = _progress(proc, rng.uniform(0.6, 1.0) if mode == "flood" else rng.uniform(0.7, 1.6))
            killed_at = time.time_ns()
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(30)
        (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
        run = open_run(run_dir)
        assert run.status == "ended without stop() (killed?)"
        completed = set()
        for line in run.lines(ordered=False):  # every line decodes: a full pass of the reader
            if line.get("type") == "TaskCompleted":
                completed.add(line["task_id"])
        assert run.bad_lines == 0  # nothing corrupted beyond a torn last line
        assert run.torn_lines <= len(run.files)
        must = [i for i, t in progress if t < killed_at - PROMISE_NS]
        assert must, f"kill {n}: the child did not run long enough to test the promise"
        missing = [i for i in range(max(must) + 1) if f"t{i}" not in completed]
        assert missing == [], f"kill {n} ({mode}): {len(missing)} tasks completed > 0.5 s before the kill are lost"


_SIGTERM_CHILD = """
import os, signal, sys, otelflow
prev = sys.argv[2]
if prev == "callable":
    def handler(signum, frame):
        print("PREVIOUS HANDLER CALLED", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, handler)
elif prev == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
kwargs = {"handle_signals": True} if sys.argv[3] == "arg" else {}
tel = otelflow.start_telemetry(checkpoint_path=sys.argv[1], resource_poll_interval=0, **kwargs)
tr = otelflow.tracker("x")
for i in range(300):
    tr.completed(tr.created(f"t{i}", "w"))
print("READY", flush=True)
os.kill(os.getpid(), signal.SIGTERM)
print("ALIVE", tel.active, flush=True)
"""


@pytest.mark.parametrize(
    ("prev", "how", "returncode"),
    [
        ("default", "arg", -signal.SIGTERM),
        ("default", "env", -signal.SIGTERM),
        ("callable", "arg", 3),
        ("ignore", "arg", 0),
    ],
)
def test_handle_signals_finalizes_the_run_then_hands_the_signal_on(tmp_path, prev, how, returncode):
    env = child_env(OTELFLOW_HANDLE_SIGNALS="1") if how == "env" else None
    res = run_child(write_script(tmp_path, _SIGTERM_CHILD), str(tmp_path / "runs"), prev, how, env=env)
    assert res.returncode == returncode, res.stderr
    assert ("PREVIOUS HANDLER CALLED" in res.stdout) == (prev == "callable")
    assert ("ALIVE False" in res.stdout) == (prev == "ignore")  # ignored stays ignored
    (run_dir,) = list((tmp_path / "runs").iterdir())
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "completed"
    assert meta["summary"]["tasks"]["completed"] == 300
    assert len(open_run(run_dir).tasks()) == 300


def test_without_handle_signals_no_handler_is_installed(tmp_path):
    script = write_script(
        tmp_path,
        """
        import signal, sys, otelflow
        before = signal.getsignal(signal.SIGTERM)
        tel = otelflow.start_telemetry(checkpoint_path=sys.argv[1], resource_poll_interval=0)
        print(signal.getsignal(signal.SIGTERM) is before)
        tel.stop()
        tel2 = otelflow.start_telemetry(checkpoint_path=sys.argv[1], resource_poll_interval=0, handle_signals=True)
        print(signal.getsignal(signal.SIGTERM) is before)
        tel2.stop()
        print(signal.getsignal(signal.SIGTERM) is before)
        """,
    )
    res = run_child(script, str(tmp_path / "runs"))
    assert res.stdout.split() == ["True", "False", "True"], res.stderr


def test_atexit_flushes_a_program_that_ends_without_stop(tmp_path):
    script = write_script(
        tmp_path,
        """
        import sys, otelflow
        otelflow.start_telemetry(checkpoint_path=sys.argv[1], resource_poll_interval=0)
        tr = otelflow.tracker("x")
        for i in range(5000):
            t = tr.created(f"t{i}", "w")
            tr.started(t)
            tr.completed(t)
        """,
    )
    runs = tmp_path / "runs"
    res = run_child(script, str(runs))
    assert res.returncode == 0, res.stderr
    (run_dir,) = list(runs.iterdir())
    run = open_run(run_dir)
    assert run.status == "completed"
    tasks = run.tasks()
    assert len(tasks) == 5000 and all(t.status == "completed" for t in tasks.values())


def test_handle_signals_from_a_non_main_thread_warns_and_installs_nothing(tmp_path):
    script = write_script(
        tmp_path,
        """
        import signal, sys, threading, otelflow
        before = signal.getsignal(signal.SIGTERM)
        out = {}
        def start():
            out["tel"] = otelflow.start_telemetry(checkpoint_path=sys.argv[1], resource_poll_interval=0,
                                                  handle_signals=True)
        t = threading.Thread(target=start); t.start(); t.join()
        print(signal.getsignal(signal.SIGTERM) is before)
        out["tel"].stop()
        """,
    )
    res = run_child(script, str(tmp_path / "runs"))
    assert res.stdout.split() == ["True"]
    assert "needs start_telemetry() in the main thread" in res.stderr
