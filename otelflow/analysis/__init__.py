"""After the run: read a run directory and explain it.

Everything here needs only a run directory (``run.json`` plus one JSONL file per
process), never a live session, so it works on a run copied from a cluster, on a run
whose processes were killed, and on a run still being written.

Example::

    from otelflow.analysis import open_run, build_report, format_report

    run = open_run()  # the latest run in $OTELFLOW_RUNS_DIR or ./.otelflow/runs
    print(format_report(build_report(run)))

Plotting needs matplotlib (``pip install 'otelflow[plots]'``); replay needs the OTLP
exporters. Both are imported only when used.
"""

from __future__ import annotations

from otelflow.analysis._tables import RunData, ScopeInfo, TaskInfo
from otelflow.analysis.compare import compare_runs, format_comparison
from otelflow.analysis.critical_path import CriticalPath, PathStep, critical_path, format_critical_path
from otelflow.analysis.plots import PlotDependencyError, concurrency, plot_run
from otelflow.analysis.reader import (
    Run,
    RunInfo,
    RunNotFoundError,
    default_runs_dir,
    list_runs,
    open_run,
)
from otelflow.analysis.replay import ReplayError, ReplayResult, replay
from otelflow.analysis.report import build_report, format_report

__all__ = [
    "CriticalPath",
    "PathStep",
    "PlotDependencyError",
    "ReplayError",
    "ReplayResult",
    "Run",
    "RunData",
    "RunInfo",
    "RunNotFoundError",
    "ScopeInfo",
    "TaskInfo",
    "build_report",
    "compare_runs",
    "concurrency",
    "critical_path",
    "default_runs_dir",
    "format_comparison",
    "format_critical_path",
    "format_report",
    "list_runs",
    "open_run",
    "plot_run",
    "replay",
]
