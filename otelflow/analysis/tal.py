"""Read a RHAPSODY telemetry (TAL) checkpoint as if otelflow had written it.

``await flow.start_telemetry(checkpoint_path=...)`` (radical-asyncflow / rhapsody-py 0.6)
writes one ``<session>.<unix-ts>.telemetry.jsonl`` file: ``section: event`` lines
(``event_type``, float-second ``event_time``, ``attributes``), then ``section: metric``
snapshots and ``section: span`` records at each checkpoint. :class:`Translator` turns each
line into otelflow's line shapes, so :func:`~otelflow.analysis.reader.open_run`,
``otelflow report`` and ``otelflow compare`` read it like a run directory — to compare
a TAL run with an otelflow run of the same workflow.

Only what the TAL recorded can be shown: its TaskStarted is the dispatch time (not when
the task ran), a task failed by its upstream has no terminal event (it is reported in its
last state, ``resolved``), and failures carry ``error_type="unknown"``.

This module only parses JSON; it never imports rhapsody.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["TAL_SUFFIX", "Translator", "is_tal_file", "tal_meta"]

TAL_SUFFIX = ".telemetry.jsonl"
"""How RHAPSODY names its checkpoint files."""

Line = dict[str, Any]

# TAL event type -> otelflow event type (the rest keep their names).
_RENAME = {"asyncflow.TaskResolved": "TaskResolved"}
_TASK_EVENTS = frozenset(
    ("TaskCreated", "TaskResolved", "TaskSubmitted", "TaskQueued", "TaskStarted", "TaskCompleted", "TaskFailed",
     "TaskCanceled")
)  # fmt: skip
_TERMINAL = {"TaskCompleted": "completed", "TaskFailed": "failed", "TaskCanceled": "canceled"}
_BLOCK_PREFIX = "block."
_WF_ATTR = "asyncflow.workflow_id"


def _sniff(path: Path) -> Line | None:
    """The first line of ``path`` decoded, or None."""
    try:
        with path.open("rb") as f:
            first = f.readline(1 << 16)
    except OSError:
        return None
    try:
        obj = msgspec.json.decode(first)
    except msgspec.DecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def is_tal_file(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a RHAPSODY TAL checkpoint (its first line is a TAL event)."""
    p = Path(path)
    if not p.is_file():
        return False
    first = _sniff(p)
    return first is not None and "event_type" in first and "type" not in first


def _session_span(path: Path) -> Line | None:
    """The session span record, if the file ends with it (the TAL stopped cleanly)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    except OSError:
        return None
    try:
        obj = msgspec.json.decode(tail)
    except msgspec.DecodeError:
        return None
    if isinstance(obj, dict) and obj.get("section") == "span" and obj.get("name") == "session":
        return obj
    return None


def tal_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``run.json``-like metadata for a TAL checkpoint file (from its name, first and last line)."""
    p = Path(path)
    first = _sniff(p) or {}
    session = first.get("session_id")
    start = _ns(first.get("event_time"))
    run_id = p.name[: -len(TAL_SUFFIX)] if p.name.endswith(TAL_SUFFIX) else p.stem
    last = _session_span(p)
    end = last.get("end_ns") if last is not None else None
    meta: dict[str, Any] = {
        "run_id": run_id,
        "session_id": session if isinstance(session, str) else None,
        "service_name": "rhapsody",
        "status": "completed" if last is not None else "unknown",
        "format": "rhapsody-tal",
        "trace_id": _hex(first.get("trace_id"), 32),
    }
    if start is not None:
        meta["start_time"] = start
    if isinstance(end, int):
        meta["end_time"] = end
    return meta


def _ns(t: Any) -> int | None:
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        return None
    return round(t * 1e9)


def _hex(v: Any, width: int) -> str | None:
    """``hex()`` output (``0x1f``) as zero-padded lowercase hex, as otelflow writes ids."""
    if not isinstance(v, str) or not v:
        return None
    try:
        return f"{int(v, 16):0{width}x}"
    except ValueError:
        return None


def _attrs(line: Line) -> dict[str, Any]:
    a = line.get("attributes")
    return a if isinstance(a, dict) else {}


def _frac(v: Any) -> float | None:
    return v / 100.0 if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


class Translator:
    """Turns the lines of one TAL file, in file order, into otelflow lines.

    Stateful: AsyncFlow labels a task inside a ``@flow.block`` with the block's uid as its
    workflow id, and only the block's own TaskCreated carries the real workflow id, so the
    translator remembers block → workflow and names (task id → function name).
    """

    def __init__(self) -> None:
        self._block_wf: dict[str, str | None] = {}
        self._names: dict[str, str] = {}

    def _scope(self, wf: Any) -> tuple[str | None, str | None]:
        """(workflow id, block id) for an AsyncFlow ``asyncflow.workflow_id`` value."""
        if not isinstance(wf, str):
            return None, None
        if wf in self._block_wf or wf.startswith(_BLOCK_PREFIX):
            return self._block_wf.get(wf), wf
        return wf, None

    def __call__(self, line: Line) -> list[Line]:
        """The otelflow lines for one TAL line (none for a line it does not know)."""
        section = line.get("section")
        if section == "event":
            return self._event(line)
        if section == "span":
            return self._span(line)
        if section == "metric":
            return self._metric(line)
        return []

    # -- events ---------------------------------------------------------------------------

    def _event(self, ev: Line) -> list[Line]:
        etype = ev.get("event_type")
        if not isinstance(etype, str):
            return []
        typ = _RENAME.get(etype, etype)
        attrs = _attrs(ev)
        tid = ev.get("task_id")
        wf, blk = self._scope(attrs.get(_WF_ATTR))
        out: Line = {
            "section": "event",
            "type": typ,
            "event_time": _ns(ev.get("event_time")) or 0,
            "emit_time": _ns(ev.get("emit_time")) or 0,
            "session_id": ev.get("session_id"),
        }
        if typ == "TaskCreated" and isinstance(tid, str) and tid.startswith(_BLOCK_PREFIX):
            # AsyncFlow registers a @flow.block as a component: it is a block, not a task.
            self._block_wf[tid] = wf
            name = attrs.get("executable")
            out.update(type="BlockStarted", workflow_id=wf, block_id=tid, block_name=name or tid)
            return [out]
        if typ in _TASK_EVENTS:
            if not isinstance(tid, str) or tid.startswith(_BLOCK_PREFIX):
                return []  # a block's own lifecycle (Queued/Submitted): not a task
            name = attrs.get("executable")
            if isinstance(name, str) and name:
                self._names.setdefault(tid, name)
            out.update(task_id=tid, task_name=self._names.get(tid), workflow_id=wf, block_id=blk)
            if typ == "TaskCreated":
                deps = attrs.get("depends_on") or attrs.get("dag_dependencies") or ()
                out["depends_on"] = [str(d) for d in deps] if isinstance(deps, list) else []
                out["backend"] = ev.get("backend")
                extra = {k: v for k, v in attrs.items() if k in ("task_type",) and isinstance(v, str)}
                if extra:
                    out["attributes"] = extra
            elif typ == "TaskFailed":
                out["error_type"] = ev.get("error_type") or attrs.get("error_type") or "unknown"
            return [out]
        if typ == "ResourceUpdate":
            gpu = ev.get("gpu_id")
            out.update(
                scope="gpu" if gpu is not None else "node",
                node=ev.get("node_id") or "",
                device=str(gpu) if gpu is not None else None,
                cpu_utilization=_frac(ev.get("cpu_percent")),
                memory_utilization=_frac(ev.get("memory_percent")),
                gpu_utilization=_frac(ev.get("gpu_percent")),
                disk_read_bytes=_int(ev.get("disk_read_bytes")),
                disk_write_bytes=_int(ev.get("disk_write_bytes")),
                net_sent_bytes=_int(ev.get("net_sent_bytes")),
                net_recv_bytes=_int(ev.get("net_recv_bytes")),
            )
            return [out]
        # SessionStarted / SessionEnded and user events (define_event) keep their fields.
        skip = ("event_type", "event_time", "emit_time", "section", "name", "trace_id", "span_id")
        for k, v in ev.items():
            if k not in skip and k not in out:
                out[k] = v
        if isinstance(tid, str):
            out["task_name"] = self._names.get(tid)
        if wf is not None or blk is not None:
            out.update(workflow_id=wf, block_id=blk)
        return [out]

    # -- spans ------------------------------------------------------------------------------

    def _span(self, sp: Line) -> list[Line]:
        name = sp.get("name")
        attrs = _attrs(sp)
        kind = name if name in ("session", "workflow", "block", "task") else "user"
        out: Line = {
            "section": "span",
            "trace_id": _hex(sp.get("trace_id"), 32),
            "span_id": _hex(sp.get("span_id"), 16),
            "parent_span_id": _hex(sp.get("parent_span_id"), 16),
            "name": name,
            "kind": kind,
            "start_time": sp.get("start_ns"),
            "end_time": sp.get("end_ns"),
        }
        new: Line = {}
        wf_attr = attrs.get(_WF_ATTR)
        if kind == "task":
            tid = attrs.get("task_id")
            if isinstance(tid, str) and tid.startswith(_BLOCK_PREFIX):
                return []
            wf, blk = self._scope(wf_attr)
            exe = attrs.get("executable")
            new = {
                "otelflow.task.id": tid,
                "otelflow.task.name": self._names.get(tid, exe) if isinstance(tid, str) else exe,
                "otelflow.task.backend": attrs.get("backend"),
                "otelflow.task.status": attrs.get("status"),
            }
            if wf is not None:
                new["otelflow.workflow.id"] = wf
            if blk is not None:
                new["otelflow.block.id"] = blk
            if attrs.get("status") == "failed":
                new["error.type"] = attrs.get("error_type") or "unknown"
            out["name"] = new["otelflow.task.name"] or "task"
            status = attrs.get("status")
            out["status"] = status if status in _TERMINAL.values() else None
        elif kind == "workflow" and isinstance(wf_attr, str):
            new = {"otelflow.workflow.id": wf_attr, "otelflow.workflow.name": wf_attr}
            out["status"] = "failed" if sp.get("status_code") == "ERROR" else "completed"
        elif kind == "block" and isinstance(wf_attr, str):
            wf, _ = self._scope(wf_attr)
            new = {"otelflow.block.id": wf_attr}
            if wf is not None:
                new["otelflow.workflow.id"] = wf
            out["status"] = "failed" if sp.get("status_code") == "ERROR" else "completed"
        out["attributes"] = {k: v for k, v in {**attrs, **new}.items() if v is not None}
        return [out]

    # -- metrics ------------------------------------------------------------------------

    @staticmethod
    def _metric(m: Line) -> list[Line]:
        t = _ns(m.get("checkpoint_time")) or 0
        out = []
        for k, v in m.items():
            if k in ("checkpoint_time", "section") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            out.append(
                {
                    "section": "metric",
                    "time": t,
                    "scope": "rhapsody",
                    "name": f"rhapsody.{k}",
                    "unit": "",
                    "kind": "sum",
                    "temporality": "cumulative",
                    "points": [{"attributes": {}, "value": v}],
                }
            )
        return out
