"""Read a run's captured log records back: filtered, from every process, in time order.

:func:`read_logs` yields the ``log`` lines of all the run's JSONL files merged by time
(see :meth:`Run.lines`), keeping those that match a :class:`LogQuery`. A record written
inside a task by code that could not name the task gets its ``task_id`` from its span
id (the run's task spans name their task). :func:`explain_empty`
turns a query that matched nothing because of a wrong key or value into one sentence.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from otelflow.analysis.reader import Run
from otelflow.errors import OtelflowError

__all__ = ["LogQuery", "LogQueryError", "explain_empty", "format_log", "read_logs"]

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "WARN": logging.WARNING,
           "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}
_NOT_ATTRIBUTES = frozenset({"section", "type", "attributes", "attribute_types"})


class LogQueryError(OtelflowError, ValueError):
    """A filter that cannot be applied (bad level, ``--where`` without ``=``) or that named
    a key, task, workflow or value the run does not have."""


@dataclass(frozen=True)
class LogQuery:
    """Which log records to keep (all conditions must hold).

    Attributes:
        task: Records of this task id.
        workflow: Records inside this workflow id (or workflow name).
        level: Records at this level or above (a name: ``WARNING``).
        logger: Records of this logger or its children.
        grep: Records whose message contains this text (case-insensitive).
        where: ``(key, value)`` pairs: a record field (``thread``) or ``extra`` field
            (``myapp.epoch``) equal to the value (compared as JSON: ``3``, ``true``, ``x``).
    """

    task: str | None = None
    workflow: str | None = None
    level: str | None = None
    logger: str | None = None
    grep: str | None = None
    where: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.level is not None and self.level.upper() not in _LEVELS:
            raise LogQueryError(
                f"--level {self.level!r} is not a log level; use DEBUG, INFO, WARNING, ERROR or CRITICAL."
            )

    @staticmethod
    def parse_where(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
        """``["k=v", ...]`` to pairs; raises :class:`LogQueryError` naming a bad item."""
        out = []
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise LogQueryError(f"--where {item!r} is not KEY=VALUE (e.g. --where myapp.epoch=3).")
            out.append((key.strip(), value.strip()))
        return tuple(out)

    def matches(self, rec: dict[str, Any], workflow_ids: frozenset[str] = frozenset()) -> bool:
        """Whether ``rec`` (a decoded ``log`` line) passes every condition."""
        if self.task is not None and rec.get("task_id") != self.task:
            return False
        if self.workflow is not None and rec.get("workflow_id") not in (workflow_ids or {self.workflow}):
            return False
        if self.level is not None and _LEVELS.get(str(rec.get("level", "")).upper(), 0) < _LEVELS[self.level.upper()]:
            return False
        if self.logger is not None:
            name = str(rec.get("logger", ""))
            if name != self.logger and not name.startswith(self.logger + "."):
                return False
        if self.grep is not None and self.grep.lower() not in str(rec.get("message", "")).lower():
            return False
        for key, value in self.where:
            found, actual = lookup(rec, key)
            if not found or not same_value(actual, value):
                return False
        return True


def lookup(rec: dict[str, Any], key: str) -> tuple[bool, Any]:
    """``(found, value)`` of ``key`` in a record: its own fields first, then ``extra``."""
    if key in rec and key not in _NOT_ATTRIBUTES:
        return True, rec[key]
    attrs = rec.get("attributes")
    if isinstance(attrs, dict) and key in attrs:
        return True, attrs[key]
    return False, None


def same_value(actual: Any, text: str) -> bool:
    """Whether ``actual`` (a JSON value) equals ``text`` read as JSON, or as a string."""
    if isinstance(actual, bool):
        return text.lower() == ("true" if actual else "false")
    if actual is None:
        return text.lower() in ("null", "none", "")
    if isinstance(actual, (int, float)):
        try:
            return float(text) == float(actual)
        except ValueError:
            return False
    return str(actual) == text


def _task_spans(run: Run) -> dict[str, str]:
    out = {}
    for span in run.spans("task", ordered=False):
        tid = (span.get("attributes") or {}).get("otelflow.task.id")
        if isinstance(tid, str) and isinstance(span.get("span_id"), str):
            out[span["span_id"]] = tid
    return out


def _workflow_ids(run: Run, wanted: str) -> frozenset[str]:
    ids = {wanted}
    for ev in run.events("WorkflowStarted", ordered=False):
        if ev.get("workflow_name") == wanted and isinstance(ev.get("workflow_id"), str):
            ids.add(ev["workflow_id"])
    return frozenset(ids)


def read_logs(run: Run, query: LogQuery | None = None) -> Iterator[dict[str, Any]]:
    """The run's log records that match ``query``, from every process, in time order."""
    query = query or LogQuery()
    spans = _task_spans(run)
    workflows = _workflow_ids(run, query.workflow) if query.workflow is not None else frozenset()
    for rec in run.lines("log"):
        if "task_id" not in rec and rec.get("span_id") in spans:
            rec["task_id"] = spans[rec["span_id"]]
        if query.matches(rec, workflows):
            yield rec


def explain_empty(run: Run, query: LogQuery) -> str | None:
    """Why ``query`` matched nothing, when a key, id or value is wrong; else None."""
    records = list(read_logs(run))
    if not records:
        return None
    if query.task is not None and not any(r.get("task_id") == query.task for r in records):
        known = {e.get("task_id") for e in run.events("TaskCreated", ordered=False)}
        if query.task not in known:
            return f"run {run.run_id} has no task {query.task!r} (see `otelflow report` for task ids)."
        return f"task {query.task!r} of run {run.run_id} logged nothing that was captured."
    if query.workflow is not None:
        ids = _workflow_ids(run, query.workflow)
        if not any(r.get("workflow_id") in ids for r in records):
            return f"no log record of run {run.run_id} is in workflow {query.workflow!r} (an id or a name)."
    for key, value in query.where:
        seen = [v for found, v in (lookup(r, key) for r in records) if found]
        if not seen:
            keys = sorted({k for r in records for k in (*r, *(r.get("attributes") or {})) if k not in _NOT_ATTRIBUTES})
            return f"no log record of run {run.run_id} has the field {key!r}; fields there: {', '.join(keys)}."
        if not any(same_value(v, value) for v in seen):
            values = sorted({str(v) for v in seen})
            shown = ", ".join(values[:8]) + (", …" if len(values) > 8 else "")
            return f"no log record of run {run.run_id} has {key}={value}; its values there: {shown}."
    if query.logger is not None and not any(
        str(r.get("logger", "")) == query.logger or str(r.get("logger", "")).startswith(query.logger + ".")
        for r in records
    ):
        names = sorted({str(r.get("logger", "")) for r in records})
        return f"no log record of run {run.run_id} is from logger {query.logger!r}; loggers there: {', '.join(names)}."
    return None


def _time(ns: Any) -> str:
    if not isinstance(ns, int):
        return "-"
    dt = datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).astimezone()
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{(ns // 1_000_000) % 1000:03d}"


def format_log(rec: dict[str, Any]) -> str:
    """One record as text: time, level, logger, ids, message, ``key=value`` extras, traceback."""
    parts = [_time(rec.get("event_time")), f"{rec.get('level', '-'):<8}", str(rec.get("logger", "") or "root")]
    where = [f"{k.split('_')[0]}={rec[k]}" for k in ("task_id", "workflow_id", "block_id") if rec.get(k)]
    if where:
        parts.append("[" + " ".join(where) + "]")
    parts.append(str(rec.get("message", "")))
    attrs = rec.get("attributes")
    if isinstance(attrs, dict) and attrs:
        parts.append(" ".join(f"{k}={_short(v)}" for k, v in attrs.items()))
    text = " ".join(parts)
    if rec.get("stacktrace"):
        text += "\n    " + str(rec["stacktrace"]).rstrip("\n").replace("\n", "\n    ")
    return text


def _short(value: Any) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:199] + "…"


def level_names() -> Sequence[str]:
    """The level names ``--level`` accepts."""
    return ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
