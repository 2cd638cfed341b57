"""Console output: an indented span tree on stderr at stop(), with bounded memory."""

from __future__ import annotations

import io
import re

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

import otelflow
from otelflow.sinks import console
from otelflow.sinks.console import ConsoleTreeProcessor
from tests.integration.otlp_receiver import run_workload


def run_with(tmp_path, env):
    tel = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ=env)
    run_workload(tasks=30, failing=2)
    tel.stop()
    return tel


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "console"},
        {"OTELFLOW_CONSOLE": "1"},
        {"OTELFLOW_CONSOLE": "true", "OTEL_TRACES_EXPORTER": "console"},
    ],
    ids=["OTEL_TRACES_EXPORTER", "OTELFLOW_CONSOLE", "both"],
)
def test_stop_prints_the_tree_to_stderr_once(tmp_path, capsys, env):
    tel = run_with(tmp_path, {**env, "OTEL_SERVICE_NAME": "console-demo"})
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("otelflow run ") == 1  # printed once even when both switches are on
    lines = err.splitlines()
    header = lines[0]
    assert tel.run_id in header and "console-demo" in header and tel.trace_id in header
    assert re.match(r"session\s+\S+ \S+\s+32 tasks: 30 completed, 2 failed$", lines[1]), lines[1]
    assert re.match(r"└── workflow etl\s+\S+ \S+\s+32 tasks: 30 completed, 2 failed$", lines[2]), lines[2]
    assert lines[3].startswith("    └── block load-0")
    read = next(line for line in lines if "read ×30" in line)
    # Groups are ordered by total time, which is a matter of microseconds here: either place.
    assert re.match(r"        [├└]── read ×30", read) and "30 completed; mean" in read
    parse = next(line for line in lines if "parse ×2" in line)
    assert "2 failed" in parse
    failures = [line.strip(" │") for line in lines if "✗" in line]
    assert len(failures) == 2 and all(f.endswith("ValueError: bad shard") for f in failures)
    assert all(f.startswith("✗ parse t") for f in failures)


def test_wait_spans_are_not_counted_as_tasks(tmp_path, capsys):
    run_with(tmp_path, {"OTELFLOW_CONSOLE": "1", "OTELFLOW_WAIT_SPANS": "1"})
    lines = capsys.readouterr().err.splitlines()
    read = next(line for line in lines if "read ×" in line)
    assert "read ×30 " in read and "30 completed;" in read
    assert not any("wait " in line for line in lines)


def test_without_console_nothing_is_printed(tmp_path, capsys):
    run_with(tmp_path, {})
    assert capsys.readouterr().err == ""


# -- the processor on its own ---------------------------------------------------------------------

_FLAGS = TraceFlags(TraceFlags.SAMPLED)
_RES = Resource({"service.name": "unit", "otelflow.run.id": "r-1"})


def _ctx(span_id: int) -> SpanContext:
    return SpanContext(0x1234, span_id, False, _FLAGS)


def scope_span(kind: str, span_id: int, parent: int | None, name: str, **attrs: object) -> ReadableSpan:
    a = {f"otelflow.{kind}.id": f"{kind}-{span_id}", **attrs}
    if kind == "session":
        a = {"otelflow.session.id": "s-1", **attrs}
    if kind == "block":
        a["otelflow.workflow.id"] = "wf"
    return ReadableSpan(
        name=name,
        context=_ctx(span_id),
        parent=_ctx(parent) if parent else None,
        resource=_RES,
        attributes=a,
        start_time=1_000,
        end_time=2_000_000_000,
    )


def task_span(i: int, parent: int, name: str = "work", failed: bool = False) -> ReadableSpan:
    events = []
    status = Status(StatusCode.UNSET)
    if failed:
        events = [Event("exception", {"exception.type": "KeyError", "exception.message": f"k{i}"}, timestamp=5)]
        status = Status(StatusCode.ERROR, "KeyError")
    return ReadableSpan(
        name=name,
        context=_ctx(10_000 + i),
        parent=_ctx(parent),
        resource=_RES,
        attributes={
            "otelflow.task.id": f"t{i}",
            "otelflow.task.name": name,
            "otelflow.task.status": "failed" if failed else "completed",
        },
        events=events,
        status=status,
        start_time=1_000,
        end_time=1_000 + 1_000_000 * (1 + i % 3),
    )


def test_memory_is_bounded_by_scopes_and_task_names_not_tasks():
    proc = ConsoleTreeProcessor(stream=io.StringIO())
    for i in range(50_000):
        proc.on_end(task_span(i, parent=3, name=f"kind{i % 4}", failed=i % 1000 == 0))
    proc.on_end(scope_span("block", 3, 2, "block b"))
    proc.on_end(scope_span("workflow", 2, 1, "workflow w"))
    proc.on_end(scope_span("session", 1, None, "session"))
    # What is kept: 3 scopes, 4 aggregate lines, the first MAX_FAILURES failures.
    assert len(proc._scopes) == 3 and len(proc._groups) == 4
    listed = sum(len(g.failures) for g in proc._groups.values())
    assert listed == min(50, console.MAX_FAILURES)
    assert proc.failures_not_listed == 50 - listed
    text = proc.render()
    assert len(text.splitlines()) < 40
    assert "kind0 ×12500" in text and "max 3.0 ms" in text
    assert f"({50 - listed} more failures not listed)" in text
    assert "KeyError: k0" in text


def test_scopes_beyond_the_cap_are_counted_not_kept(monkeypatch):
    monkeypatch.setattr(console, "MAX_SCOPES", 10)
    proc = ConsoleTreeProcessor(stream=io.StringIO())
    for i in range(25):
        proc.on_end(scope_span("workflow", 100 + i, 1, f"workflow w{i}"))
    proc.on_end(scope_span("session", 1, None, "session"))  # the root is always kept
    assert len(proc._scopes) == 11 and proc.scopes_not_shown == 15
    assert "(15 more workflow/block spans not shown)" in proc.render()


def test_ascii_terminal_gets_ascii_art():
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    proc = ConsoleTreeProcessor(stream=stream)
    proc.on_end(task_span(1, parent=2, failed=True))
    proc.on_end(scope_span("workflow", 2, 1, "workflow w"))
    proc.on_end(scope_span("session", 1, None, "session"))
    proc.shutdown()
    stream.flush()
    text = stream.buffer.getvalue().decode("ascii")  # would have raised on any non-ASCII
    assert "`-- workflow w" in text and "work x1" in text and "x work t1  KeyError: k1" in text
    proc.shutdown()  # idempotent: printed once
    assert stream.buffer.getvalue().decode("ascii") == text
