"""A run as pandas DataFrames: ``open_run(...).to_pandas()``.

pandas is optional (``pip install 'otelflow[pandas]'``) and imported only here, when a
frame is built. The frames have the columns of :mod:`otelflow.analysis.tables_export`;
time columns (``created`` … ``ended``, ``event_time``, ``time``) are
``datetime64[ns, UTC]`` (exact to the ns), waits and durations float seconds.

Example (in a notebook)::

    frames = open_run().to_pandas()
    frames.tasks.nlargest(5, "execution_s")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from otelflow.analysis.tables_export import COLUMNS, TABLES, column_type, rows
from otelflow.errors import OtelflowError

if TYPE_CHECKING:
    from otelflow.analysis.reader import Run

__all__ = ["Frames", "PandasDependencyError", "to_pandas"]

_TIME_COLUMNS = {"created", "resolved", "submitted", "queued", "started", "ended", "event_time", "time"}


class PandasDependencyError(OtelflowError, ImportError):
    """pandas, needed for DataFrames, is not installed."""


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise PandasDependencyError(
            "DataFrames need pandas, which is not installed: pip install 'otelflow[pandas]'."
        ) from exc
    return pandas


def to_pandas(run: Run, table: str) -> Any:
    """One table of ``run`` (``tasks``, ``events``, ``resources`` or ``logs``) as a DataFrame."""
    pd = _pandas()
    cols = COLUMNS.get(table)
    if cols is None:
        raise ValueError(f"Unknown table {table!r}: choose one of {', '.join(TABLES)}.")
    data: dict[str, list[Any]] = {c: [] for c in cols}
    for row in rows(run, table):
        for c in cols:
            data[c].append(row[c])
    frame = {}
    for c in cols:
        kind = column_type(c)
        if c in _TIME_COLUMNS:
            frame[c] = pd.to_datetime(pd.array(data[c], dtype="Int64"), unit="ns", utc=True)
        elif kind == "int":
            frame[c] = pd.array(data[c], dtype="Int64")
        elif kind == "float":
            frame[c] = pd.array(data[c], dtype="float64")
        else:
            frame[c] = pd.array(data[c], dtype="string")
        data[c] = []  # free as we go
    return pd.DataFrame(frame)


class Frames:
    """The tables of a run as DataFrames, each built on first access and kept.

    Attributes:
        tasks: One row per task: ids, names, worker, state, every lifecycle time and wait.
        events: One row per event line (the rest of its fields as JSON in ``fields``).
        resources: One row per resource sample (CPU, memory, GPU utilization …).
        logs: One row per log record.
    """

    def __init__(self, run: Run) -> None:
        self._run = run
        self._cache: dict[str, Any] = {}
        _pandas()  # fail now, with the install hint, not on first attribute access

    def _get(self, table: str) -> Any:
        if table not in self._cache:
            self._cache[table] = to_pandas(self._run, table)
        return self._cache[table]

    @property
    def tasks(self) -> Any:
        """The tasks DataFrame."""
        return self._get("tasks")

    @property
    def events(self) -> Any:
        """The events DataFrame."""
        return self._get("events")

    @property
    def resources(self) -> Any:
        """The resource samples DataFrame."""
        return self._get("resources")

    @property
    def logs(self) -> Any:
        """The log records DataFrame."""
        return self._get("logs")

    def __repr__(self) -> str:
        return f"Frames(run={self._run.run_id!r}, tables={list(TABLES)})"
