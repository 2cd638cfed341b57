"""A readable span tree on stderr at the end of a run, for local development.

Turned on by ``OTEL_TRACES_EXPORTER=console`` or ``OTELFLOW_CONSOLE=1``. Memory stays
bounded however many tasks run: the processor keeps the session, workflow and block
spans (the scopes, up to :data:`MAX_SCOPES`), and for tasks only one aggregate line per
(scope, task name) — counts by status, total/mean/max duration — plus the first
:data:`MAX_FAILURES` failures with their error. Other spans (your own, from
``telemetry.tracer()``) are aggregated the same way under their parent scope. Example::

    otelflow run 20250102T101500Z-3fa2c1 · service demo · trace 5b8aa5a2d2c872e8321cf37308d69df2
    session                                       1.52 s  1000 tasks: 998 completed, 2 failed
    └── workflow etl                              1.50 s  1000 tasks: 998 completed, 2 failed
        ├── block load                            0.61 s  600 tasks: 600 completed
        │   └── read ×600                                600 completed; mean 0.9 ms, max 4.1 ms, sum 0.54 s
        └── block train                           0.88 s  400 tasks: 398 completed, 2 failed
            └── fit ×400                                 398 completed, 2 failed; mean 2.1 ms, max 9.8 ms, sum 0.84 s
                    ✗ fit t3e2a1-17  ValueError: bad shard
                    ✗ fit t3e2a1-99  ValueError: bad shard

Scope rows show wall time (span start to end) and task counts by status; task rows show
how many tasks of that name ran directly in the scope, by status, and their span
durations (created to finished).

Printed once, when the tracer provider shuts down (``stop()``).
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Any, TextIO

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import StatusCode

#: Most scope spans (session, workflows, blocks) kept; later ones are only counted.
MAX_SCOPES = 2000
#: Most failed tasks listed by id and error; later ones are only counted.
MAX_FAILURES = 20
#: Most distinct (scope, name) aggregate lines; further names fold into "(other)".
MAX_GROUPS = 5000

_SCOPE_KINDS = ("session", "workflow", "block")
_NAME_WIDTH = 44


@dataclass
class _Group:
    """Aggregate of the task (or other) spans with one name under one parent."""

    name: str
    statuses: dict[str, int] = field(default_factory=dict)
    count: int = 0
    total_ns: int = 0
    max_ns: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def add(self, status: str, duration_ns: int) -> None:
        self.count += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.total_ns += duration_ns
        self.max_ns = max(self.max_ns, duration_ns)


@dataclass
class _Scope:
    span_id: int
    parent_id: int | None
    kind: str
    name: str
    start: int
    end: int
    status: str
    attributes: dict[str, Any]


class ConsoleTreeProcessor(SpanProcessor):
    """Collects spans into a bounded tree and prints it to stderr at shutdown.

    ``on_end`` runs on whichever thread ends the span (the dispatcher for otelflow's own
    spans) and takes a lock for a few dictionary updates.

    Args:
        stream: Where to print; the current ``sys.stderr`` at shutdown when None.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._scopes: dict[int, _Scope] = {}
        self._groups: dict[tuple[int | None, str], _Group] = {}
        self._failures_listed = 0
        self.scopes_not_shown = 0
        self.failures_not_listed = 0
        self._trace_id = 0
        self._resource: dict[str, Any] = {}
        self._done = False

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Fold ``span`` into the tree. O(1); memory does not grow with task count."""
        if self._done:
            return
        attrs = dict(span.attributes or {})
        kind = _kind(span, attrs)
        if kind == "wait":
            return  # a task's wait band (OTELFLOW_WAIT_SPANS): its task row already counts it
        parent = span.parent.span_id if span.parent is not None else None
        if parent is None and kind == "workflow" and span.links:
            # A workflow with a trace of its own: drawn under the session span it links to.
            parent = span.links[0].context.span_id
        ctx = span.context
        start = span.start_time or 0
        end = span.end_time or start
        with self._lock:
            if ctx is not None and not self._trace_id:
                self._trace_id = ctx.trace_id
            if not self._resource and span.resource is not None:
                self._resource = dict(span.resource.attributes)
            if kind in _SCOPE_KINDS and ctx is not None:
                if len(self._scopes) >= MAX_SCOPES and kind != "session":
                    self.scopes_not_shown += 1
                    return
                # The session row is "session" (its span's name holds the service and run id,
                # already in the header); a scope is failed when its body raised — failed
                # tasks make its span ERROR too, but the row shows them in its counts.
                label = "session" if kind == "session" else _scope_name(span.name, kind)
                status = "failed" if attrs.get("error.type") else "completed"
                self._scopes[ctx.span_id] = _Scope(ctx.span_id, parent, kind, label, start, end, status, attrs)
                return
            name = str(attrs.get("otelflow.task.name", span.name))
            # Task spans group under their scope; spans of your own (their parent is often a
            # task span) group by name only, so they cannot make one group per task.
            key = (parent, name) if "otelflow.task.id" in attrs else (None, name)
            group = self._groups.get(key)
            if group is None:
                if len(self._groups) >= MAX_GROUPS:
                    # One overflow group in all: keyed per parent it would grow with every
                    # task that has spans of its own under it (memory must stay bounded).
                    key = (None, "(other)")
                    group = self._groups.get(key)
                if group is None:
                    group = self._groups[key] = _Group(key[1])
            status = _status(span, attrs)
            group.add(status, max(0, end - start))
            if status == "failed":
                if self._failures_listed < MAX_FAILURES:
                    self._failures_listed += 1
                    who = str(attrs.get("otelflow.task.id", f"{ctx.span_id:016x}" if ctx else "?"))
                    group.failures.append((who, _error_text(span, attrs)))
                else:
                    self.failures_not_listed += 1

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing is sent anywhere before shutdown."""
        return True

    def shutdown(self) -> None:
        """Print the tree (once)."""
        with self._lock:
            if self._done:
                return
            self._done = True
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            fancy = _can_encode(stream, "├─│└✗×·µ…")
            text = self.render(unicode=fancy)
            if not fancy:
                text = text.replace("µs", "us").replace("…", "...")
            stream.write(text)
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream at exit
            pass

    # -- rendering -------------------------------------------------------------------------

    def render(self, unicode: bool = True) -> str:
        """The tree as text (what :meth:`shutdown` prints)."""
        with self._lock:
            scopes = dict(self._scopes)
            groups = dict(self._groups)
        children: dict[int | None, list[_Scope]] = {}
        for scope in scopes.values():
            parent = scope.parent_id if scope.parent_id in scopes else None
            children.setdefault(parent, []).append(scope)
        for kids in children.values():
            kids.sort(key=lambda s: (s.start, s.span_id))
        group_children: dict[int | None, list[_Group]] = {}
        for (parent, _name), group in groups.items():
            key = parent if parent in scopes else None
            group_children.setdefault(key, []).append(group)
        for gs in group_children.values():
            gs.sort(key=lambda g: -g.total_ns)

        tee, last, pipe, blank = ("├── ", "└── ", "│   ", "    ") if unicode else ("|-- ", "`-- ", "|   ", "    ")
        cross, times, dot = ("✗", "×", "·") if unicode else ("x", "x", "-")
        lines = [self._header(dot)]

        def scope_totals(scope: _Scope) -> str:
            a = scope.attributes
            counts = [(k, int(a.get(f"otelflow.tasks.{k}", 0) or 0)) for k in ("completed", "failed", "canceled")]
            total = sum(n for _, n in counts)
            if not total:
                return scope.status if scope.status not in ("completed", "ok") else ""
            parts = ", ".join(f"{n} {k}" for k, n in counts if n)
            extra = f" [{scope.status}]" if scope.status not in ("completed", "ok") else ""
            return f"{total} task{'s' if total != 1 else ''}: {parts}{extra}"

        def walk(scope_id: int | None, prefix: str) -> None:
            kids: list[tuple[str, Any]] = [("scope", s) for s in children.get(scope_id, [])]
            kids += [("group", g) for g in group_children.get(scope_id, [])]
            for i, (what, item) in enumerate(kids):
                is_last = i == len(kids) - 1
                branch = prefix + (last if is_last else tee)
                deeper = prefix + (blank if is_last else pipe)
                if what == "scope":
                    label = item.name if item.kind == "session" else f"{item.kind} {item.name}"
                    lines.append(_row(branch + label, _fmt_s(item.end - item.start), scope_totals(item)))
                    walk(item.span_id, deeper)
                else:
                    lines.append(_group_row(branch, item, times))
                    lines.extend(f"{deeper}    {cross} {item.name} {who}  {err}" for who, err in item.failures)

        # Roots: the session (and anything whose parent was not kept), without a branch.
        for root in children.get(None, []):
            label = root.name if root.kind == "session" else f"{root.kind} {root.name}"
            lines.append(_row(label, _fmt_s(root.end - root.start), scope_totals(root)))
            walk(root.span_id, "")
        orphans = group_children.get(None, [])
        for group in orphans:
            lines.append(_group_row("", group, times))
            lines.extend(f"    {cross} {group.name} {who}  {err}" for who, err in group.failures)
        if self.scopes_not_shown:
            lines.append(f"({self.scopes_not_shown} more workflow/block spans not shown)")
        if self.failures_not_listed:
            lines.append(f"({self.failures_not_listed} more failures not listed)")
        return "\n".join(lines) + "\n"

    def _header(self, dot: str) -> str:
        res = self._resource
        bits = ["otelflow run " + str(res.get("otelflow.run.id", "?"))]
        if res.get("service.name"):
            bits.append(f"service {res['service.name']}")
        if self._trace_id:
            bits.append(f"trace {self._trace_id:032x}")
        return f" {dot} ".join(bits)


def _kind(span: ReadableSpan, attrs: dict[str, Any]) -> str:
    if "otelflow.task.id" in attrs:
        # A task span always has its status; its wait span (same task id) has none.
        return "task" if "otelflow.task.status" in attrs else "wait"
    if span.parent is None and "otelflow.session.id" in attrs:
        return "session"
    name = span.name or ""
    if name.startswith("workflow ") and "otelflow.workflow.id" in attrs and "otelflow.block.id" not in attrs:
        return "workflow"
    if name.startswith("block ") and "otelflow.block.id" in attrs:
        return "block"
    return "other"


def _scope_name(name: str, kind: str) -> str:
    prefix = f"{kind} "
    return name[len(prefix) :] if name.startswith(prefix) else name


def _status(span: ReadableSpan, attrs: dict[str, Any]) -> str:
    status = attrs.get("otelflow.task.status")
    if status:
        return str(status)
    if span.status is not None and span.status.status_code is StatusCode.ERROR:
        return "failed"
    return "completed"


def _error_text(span: ReadableSpan, attrs: dict[str, Any]) -> str:
    for event in span.events or ():
        if event.name == "exception" and event.attributes:
            etype = event.attributes.get("exception.type", "")
            msg = event.attributes.get("exception.message", "")
            return _one_line(f"{etype}: {msg}" if msg else str(etype))
    if span.status is not None and span.status.description:
        return _one_line(span.status.description)
    return str(attrs.get("error.type", "failed"))


def _one_line(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt_s(ns: int) -> str:
    s = ns / 1e9
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def _row(label: str, duration: str, detail: str) -> str:
    return f"{label:<{_NAME_WIDTH}} {duration:>9}  {detail}".rstrip()


def _group_row(branch: str, group: _Group, times: str) -> str:
    statuses = ", ".join(f"{n} {k}" for k, n in sorted(group.statuses.items(), key=lambda kv: -kv[1]))
    mean = group.total_ns // max(1, group.count)
    label = f"{branch}{group.name} {times}{group.count}"
    timing = f"mean {_fmt_s(mean)}, max {_fmt_s(group.max_ns)}, sum {_fmt_s(group.total_ns)}"
    # The duration column is wall time; tasks overlap, so their sum goes in the detail.
    return f"{label:<{_NAME_WIDTH}} {'':>9}  {statuses}; {timing}"


def _can_encode(stream: Any, sample: str) -> bool:
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        sample.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


__all__ = ["MAX_FAILURES", "MAX_GROUPS", "MAX_SCOPES", "ConsoleTreeProcessor"]
