"""What run.json, `otelflow runs` and the report say about a run that did not end well
(issue 18, found items 8 and 9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from otelflow.analysis import list_runs, open_run
from otelflow.analysis.report import build_report, format_report
from tests.reliability.conftest import child_env, fill, run_child, write_script

_KILLED_CHILD = """
import os, signal, sys
import otelflow
tel = otelflow.start_telemetry(checkpoint_path=sys.argv[1], resource_poll_interval=0)
tr = otelflow.tracker("x")
for i in range(50):
    t = tr.created(f"t{i}", "work")
    tr.started(t)
    tr.completed(t)
tel.flush()
os.kill(os.getpid(), getattr(signal, sys.argv[2]))
"""


def _only_run(runs: Path) -> Path:
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


def test_a_killed_run_says_it_ended_without_stop_and_when(tmp_path):
    runs = tmp_path / "runs"
    res = run_child(write_script(tmp_path, _KILLED_CHILD), str(runs), "SIGKILL")
    assert res.returncode == -signal.SIGKILL
    run_dir = _only_run(runs)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # as written
    run = open_run(run_dir)
    assert run.status == "ended without stop() (killed?)"
    assert any("last record at" in n for n in run.notes)
    assert len(run.tasks()) == 50
    text = format_report(build_report(run))
    assert "ended without stop() (killed?)" in text and "last record at" in text
    assert list_runs(runs)[0].status == "ended without stop() (killed?)"
    out = subprocess.run(
        [sys.executable, "-m", "otelflow", "runs", str(runs)],
        check=False,
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert "ended without stop() (killed?)" in out.stdout


def test_a_sigtermed_run_without_signal_handling_also_says_so(tmp_path):
    runs = tmp_path / "runs"
    res = run_child(write_script(tmp_path, _KILLED_CHILD), str(runs), "SIGTERM")
    assert res.returncode == -signal.SIGTERM
    assert open_run(_only_run(runs)).status == "ended without stop() (killed?)"


def test_a_running_run_of_a_live_process_stays_running(tmp_path):
    import otelflow

    tel = otelflow.start_telemetry(checkpoint_path=tmp_path / "runs", resource_poll_interval=0, environ={})
    try:
        assert open_run(tel.run_dir).status == "running"
    finally:
        tel.stop()
    assert open_run(tel.run_dir).status == "completed"


_DISK_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import otelflow
from tests.reliability.conftest import fill
tel = otelflow.start_telemetry(checkpoint_path=sys.argv[1], resource_poll_interval=0, flush_interval=0.05)
tr = otelflow.tracker("x")
for i in range(200):
    t = tr.created(f"t{i}", "work")
    tr.completed(t)
tel.flush()
fill(Path(sys.argv[1]))
with otelflow.workflow_scope("after"):
    for i in range(5000):
        t = tr.created(f"u{i}", "work" + "x" * 50)
        tr.started(t)
        tr.completed(t)
s = tel.stop()
print("LOST", s["dropped"]["jsonl_lines_lost"], "DONE", s["tasks"]["completed"])
"""


def test_a_full_disk_is_reported_on_stderr_once_and_in_run_json(tmp_path, small_disk):
    from tests.reliability.conftest import ROOT

    res = run_child(write_script(tmp_path, _DISK_CHILD), str(small_disk), str(ROOT))
    assert res.returncode == 0, res.stderr
    lost = int(res.stdout.split("LOST")[1].split()[0])
    assert lost > 0
    assert "DONE 5200" in res.stdout  # the workflow finished, every task counted
    # No logging configured in the child: the warning still reached stderr, once.
    assert res.stderr.count("could not write the run file") == 1
    assert "free disk space" in res.stderr
    run_dir = _only_run(small_disk)
    assert not list(run_dir.glob("run.tmp*"))
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "completed"
    assert meta["problems"] == [f"disk full: {lost} line(s) lost from {next(run_dir.glob('*.jsonl')).name}"]
    run = open_run(run_dir)
    text = format_report(build_report(run))
    assert f"disk full: {lost} line(s) lost" in text
    assert "a process was killed" not in text
    assert len([t for t in run.tasks().values() if t.status == "completed"]) >= 200


def test_a_full_disk_from_the_start_still_finishes_the_workflow(tmp_path, small_disk):
    fill(small_disk)
    script = write_script(
        tmp_path,
        """
        import sys, otelflow
        tel = otelflow.start_telemetry(checkpoint_path=sys.argv[1] + "/runs", resource_poll_interval=0)
        tr = otelflow.tracker("x")
        for i in range(100):
            tr.completed(tr.created(None, "w"))
        print("DONE", tel.stop()["tasks"]["completed"])
        """,
    )
    res = run_child(script, str(small_disk))
    # Either the run directory cannot be made (a clear ConfigError at start) or the lines
    # are counted as lost; never a traceback from a background thread.
    if res.returncode == 0:
        assert "DONE 100" in res.stdout
        assert "Traceback" not in res.stderr
    else:
        assert "Cannot create the run directory" in res.stderr
        assert "OTELFLOW_RUNS_DIR" in res.stderr
    assert not list(small_disk.rglob("run.tmp*"))


def test_run_json_is_never_left_as_a_temporary_file(tmp_path, monkeypatch):
    import otelflow

    tel = otelflow.start_telemetry(checkpoint_path=tmp_path / "runs", resource_poll_interval=0, environ={})
    real_replace = os.replace

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    tel.stop()
    monkeypatch.setattr(os, "replace", real_replace)
    assert not list(tel.run_dir.glob("run.tmp*"))
    assert json.loads((tel.run_dir / "run.json").read_text())["status"] == "completed"


def test_drops_and_rejected_values_are_warned_about_on_stderr_without_logging(tmp_path):
    script = write_script(
        tmp_path,
        """
        import sys, otelflow
        tel = otelflow.start_telemetry(checkpoint_path=sys.argv[1], resource_poll_interval=0,
                                       queue_size=1024, queue_full="drop")
        Tick = otelflow.define_event("app.Tick", n=int)
        tr = otelflow.tracker("x")
        tr.completed(tr.created(None, "t"), cpu_time_s="0.5")
        otelflow.emit("app.Tick", n="notint")
        for i in range(200_000):
            otelflow.emit(Tick(n=i))
        s = tel.stop()
        print("DROPPED", s["dropped"]["events"] > 0)
        """,
    )
    res = run_child(script, str(tmp_path / "runs"))
    assert res.returncode == 0, res.stderr
    assert "DROPPED True" in res.stdout
    assert res.stderr.count("otelflow dropped an event") == 1
    assert "cpu_time_s='0.5'" in res.stderr
    assert "Expected `int`, got `str`" in res.stderr
