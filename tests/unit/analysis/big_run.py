"""Record a real N-task run (the real session, a tracker, four workers) for scale tests."""

from __future__ import annotations

from pathlib import Path

import otelflow


def record(runs_dir: Path, n: int, *, workflows: int = 10, fail_every: int = 0) -> Path:
    """Record ``n`` tasks in ``workflows`` workflows (stages ``load`` → ``fit``), return the run directory."""
    tel = otelflow.start_telemetry(checkpoint_path=runs_dir, resource_poll_interval=0, environ={})
    try:
        trk = otelflow.tracker("scale")
        per = max(1, n // workflows)
        i = 0
        for w in range(workflows):
            with otelflow.workflow_scope(f"wf{w % 3}"):
                prev = None
                for k in range(per if w < workflows - 1 else n - per * (workflows - 1)):
                    name = "load" if k % 2 == 0 else "fit"
                    tid = trk.created(f"t{i}", name, depends_on=[prev] if prev and k % 2 else ())
                    trk.submitted(tid)
                    trk.started(tid, worker=f"w{i % 4}")
                    if fail_every and i % fail_every == fail_every - 1:
                        trk.failed(tid, ValueError("bad"))
                    else:
                        trk.completed(tid)
                    prev = tid
                    i += 1
    finally:
        tel.stop()
    assert tel.run_dir is not None
    return Path(tel.run_dir)
