"""A run as flat tables — tasks, events, resources, logs — for CSV, Parquet and pandas.

Every table is produced as rows (dicts with the same keys, in :data:`COLUMNS` order) by
:func:`rows`, streamed, so writing a 10⁶-task run needs no second copy of it in memory.

* ``tasks`` — one row per task with every lifecycle time (ns since the epoch) and the
  waits derived from them (seconds, see :mod:`otelflow.analysis._tables`);
* ``events`` — one row per event line: the common fields, plus the rest as JSON;
* ``resources`` — one row per ``ResourceUpdate`` sample;
* ``logs`` — one row per ``LogRecord`` event and per ``section: log`` line.

Parquet needs pyarrow (``pip install 'otelflow[parquet]'``), imported only here, only
when writing Parquet.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otelflow.errors import OtelflowError

if TYPE_CHECKING:
    from otelflow.analysis.reader import Run

__all__ = ["COLUMNS", "TABLES", "ExportDependencyError", "rows", "write_csv", "write_parquet"]

TABLES = ("tasks", "events", "resources", "logs")

_TASK_TIMES = ("created", "resolved", "submitted", "queued", "started", "ended")
COLUMNS: dict[str, tuple[str, ...]] = {
    "tasks": (
        "task_id",
        "task_name",
        "workflow_id",
        "workflow_name",
        "block_id",
        "block_name",
        "backend",
        "worker",
        "pid",
        "status",
        *_TASK_TIMES,
        "dependency_wait_s",
        "dispatch_wait_s",
        "queue_wait_s",
        "scheduling_wait_s",
        "execution_s",
        "lifetime_s",
        "cpu_time_s",
        "peak_rss_bytes",
        "error_type",
        "error_message",
        "depends_on",
    ),
    "events": ("event_time", "type", "task_id", "task_name", "workflow_id", "block_id", "span_id", "fields"),
    "resources": (
        "event_time",
        "scope",
        "node",
        "device",
        "pid",
        "cpu_utilization",
        "memory_utilization",
        "memory_used_bytes",
        "memory_total_bytes",
        "gpu_utilization",
        "disk_read_bytes",
        "disk_write_bytes",
        "net_recv_bytes",
        "net_sent_bytes",
    ),
    "logs": ("time", "level", "logger", "message", "task_id", "trace_id", "span_id"),
}
"""The columns of each table, in order."""

_INT = "int"
_FLOAT = "float"
_TYPES: dict[str, str] = {
    **dict.fromkeys(_TASK_TIMES, _INT),
    "pid": _INT,
    "peak_rss_bytes": _INT,
    "event_time": _INT,
    "time": _INT,
    "memory_used_bytes": _INT,
    "memory_total_bytes": _INT,
    "disk_read_bytes": _INT,
    "disk_write_bytes": _INT,
    "net_recv_bytes": _INT,
    "net_sent_bytes": _INT,
    **dict.fromkeys(
        (
            "dependency_wait_s",
            "dispatch_wait_s",
            "queue_wait_s",
            "scheduling_wait_s",
            "execution_s",
            "lifetime_s",
            "cpu_time_s",
            "cpu_utilization",
            "memory_utilization",
            "gpu_utilization",
        ),
        _FLOAT,
    ),
}
_EVENT_COMMON = {"section", "event_time", "type", "task_id", "task_name", "workflow_id", "block_id", "span_id"}


class ExportDependencyError(OtelflowError, ImportError):
    """pyarrow, needed for Parquet, is not installed."""


def column_type(name: str) -> str:
    """``"int"``, ``"float"`` or ``"str"``: the type of a column in every table."""
    return _TYPES.get(name, "str")


def _task_rows(run: Run) -> Iterator[dict[str, Any]]:
    for t in run.tasks().values():
        execution, dependency, dispatch, queue, scheduling = t.timings()
        yield {
            "task_id": t.task_id,
            "task_name": t.name,
            "workflow_id": t.workflow_id,
            "workflow_name": t.workflow_name,
            "block_id": t.block_id,
            "block_name": t.block_name,
            "backend": t.backend,
            "worker": t.worker,
            "pid": t.pid,
            "status": t.state,
            "created": t.created,
            "resolved": t.resolved,
            "submitted": t.submitted,
            "queued": t.queued,
            "started": t.started,
            "ended": t.ended,
            "dependency_wait_s": dependency,
            "dispatch_wait_s": dispatch,
            "queue_wait_s": queue,
            "scheduling_wait_s": scheduling,
            "execution_s": execution,
            "lifetime_s": t.lifetime_s,
            "cpu_time_s": t.cpu_time_s,
            "peak_rss_bytes": t.peak_rss_bytes,
            "error_type": t.error_type,
            "error_message": t.error_message,
            "depends_on": ";".join(t.depends_on) if t.depends_on else None,
        }


def _event_rows(run: Run) -> Iterator[dict[str, Any]]:
    for ev in run.events():
        rest = {k: v for k, v in ev.items() if k not in _EVENT_COMMON}
        yield {
            "event_time": _as_int(ev.get("event_time")),
            "type": ev.get("type"),
            "task_id": ev.get("task_id"),
            "task_name": ev.get("task_name"),
            "workflow_id": ev.get("workflow_id"),
            "block_id": ev.get("block_id"),
            "span_id": ev.get("span_id"),
            "fields": json.dumps(rest, separators=(",", ":"), default=str) if rest else None,
        }


def _resource_rows(run: Run) -> Iterator[dict[str, Any]]:
    cols = COLUMNS["resources"]
    for ev in run.events(types="ResourceUpdate"):
        yield {c: _typed(c, ev.get(c)) for c in cols}


def _log_rows(run: Run) -> Iterator[dict[str, Any]]:
    for line in run.lines(("event", "log")):
        if line.get("section") == "event" and line.get("type") != "LogRecord":
            continue
        t = line.get("event_time") if line.get("section") == "event" else line.get("time")
        yield {
            "time": _as_int(t),
            "level": line.get("level") or line.get("severity"),
            "logger": line.get("logger"),
            "message": line.get("message") if line.get("message") is not None else line.get("body"),
            "task_id": line.get("task_id"),
            "trace_id": line.get("trace_id"),
            "span_id": line.get("span_id"),
        }


def _as_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _typed(col: str, v: Any) -> Any:
    kind = column_type(col)
    if v is None or isinstance(v, bool):
        return None
    if kind == _INT:
        return v if isinstance(v, int) else None
    if kind == _FLOAT:
        return float(v) if isinstance(v, (int, float)) else None
    return v if isinstance(v, str) else json.dumps(v, default=str)


def rows(run: Run, table: str) -> Iterator[dict[str, Any]]:
    """Stream the rows of one table of ``run``.

    Raises:
        ValueError: ``table`` is not one of :data:`TABLES`.
    """
    makers = {"tasks": _task_rows, "events": _event_rows, "resources": _resource_rows, "logs": _log_rows}
    if table not in makers:
        raise ValueError(f"Unknown table {table!r}: choose one of {', '.join(TABLES)}.")
    return makers[table](run)


def _targets(output: str | os.PathLike[str], tables: list[str], ext: str) -> dict[str, Path]:
    out = Path(output)
    if len(tables) == 1:
        return {tables[0]: out}
    out.mkdir(parents=True, exist_ok=True)
    return {t: out / f"{t}.{ext}" for t in tables}


def write_csv(run: Run, output: str | os.PathLike[str], tables: list[str] | None = None) -> list[Path]:
    """Write tables as CSV: one table to the file ``output``, several into the directory.

    Empty cells are missing values; times are integer ns since the epoch.
    """
    tables = tables or ["tasks"]
    written = []
    for table, path in _targets(output, tables, "csv").items():
        cols = COLUMNS[table]
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for row in rows(run, table):
                w.writerow(["" if row[c] is None else row[c] for c in cols])
        written.append(path)
    return written


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ExportDependencyError(
            "Parquet export needs pyarrow, which is not installed: pip install 'otelflow[parquet]'."
        ) from exc
    return pyarrow


def arrow_schema(table: str) -> Any:
    """The pyarrow schema of a table (int64 ns times, float64 seconds, strings)."""
    pa = _pyarrow()
    kinds = {_INT: pa.int64(), _FLOAT: pa.float64()}
    return pa.schema([(c, kinds.get(column_type(c), pa.string())) for c in COLUMNS[table]])


def arrow_batches(run: Run, table: str, batch_rows: int = 65_536) -> Iterator[Any]:
    """Stream a table as pyarrow record batches of ``batch_rows`` rows."""
    pa = _pyarrow()
    schema = arrow_schema(table)
    cols = COLUMNS[table]
    buf: dict[str, list[Any]] = {c: [] for c in cols}
    n = batches = 0
    for row in rows(run, table):
        for c in cols:
            buf[c].append(row[c])
        n += 1
        if n == batch_rows:
            yield pa.record_batch([buf[c] for c in cols], schema=schema)
            buf = {c: [] for c in cols}
            n = 0
            batches += 1
    if n or not batches:  # an empty table is still one (empty) batch with its schema
        yield pa.record_batch([buf[c] for c in cols], schema=schema)


def write_parquet(run: Run, output: str | os.PathLike[str], tables: list[str] | None = None) -> list[Path]:
    """Write tables as Parquet (needs pyarrow): one to the file ``output``, several into it as a directory."""
    pa = _pyarrow()
    tables = tables or ["tasks"]
    written = []
    for table, path in _targets(output, tables, "parquet").items():
        with pa.parquet.ParquetWriter(str(path), arrow_schema(table)) as w:
            for batch in arrow_batches(run, table):
                w.write_batch(batch)
        written.append(path)
    return written
