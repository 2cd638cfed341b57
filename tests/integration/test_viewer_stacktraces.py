"""A failed task's ``exception`` span event carries ``exception.stacktrace`` (issue 13 part 3).

From an inline ``@otelflow.task``, a thread pool and a process pool alike, checked on what a
real OTLP receiver got; bounded to 8 KiB with a cut marker.
"""

from __future__ import annotations

import traceback
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

import otelflow
from otelflow.events.stacktrace import MAX_STACKTRACE, bound_stacktrace, format_stacktrace
from otelflow.integrations import instrument, uninstrument
from tests.integration.otlp_receiver import HttpReceiver


def explode_in_worker(n: int) -> int:
    raise ValueError(f"worker could not handle {n}")


def recurse_then_fail(n: int) -> int:
    if n == 0:
        raise RuntimeError("bottom")
    return recurse_then_fail(n - 1)


def chained(n: int) -> None:
    """Fail with a chain of n + 1 exceptions (each adds distinct frames to the trace)."""
    try:
        if n == 0:
            raise KeyError("root cause")
        chained(n - 1)
    except Exception as exc:
        raise RuntimeError(f"level {n}") from exc


def start(tmp_path: Path, receiver: HttpReceiver) -> otelflow.Telemetry:
    return otelflow.start_telemetry(
        checkpoint_path=str(tmp_path / "runs"),
        resource_poll_interval=0,
        environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRICS_EXPORTER": "none",
        },
    )


def exception_event(receiver: HttpReceiver, name: str) -> dict:
    (span,) = [sp for sp in receiver.spans() if sp.name == name]
    (event,) = [attrs for ev_name, _t, attrs in span.events if ev_name == "exception"]
    return event


@pytest.mark.parametrize("pool_cls", [ThreadPoolExecutor, ProcessPoolExecutor], ids=["threads", "processes"])
def test_a_task_raising_in_a_worker_exports_a_stacktrace_naming_the_function(tmp_path, pool_cls):
    with HttpReceiver() as receiver:
        tel = start(tmp_path, receiver)
        with pool_cls(1) as pool:
            instrument(pool)
            try:
                fut = pool.submit(explode_in_worker, 7)
                with pytest.raises(ValueError, match="worker could not handle 7"):
                    fut.result(timeout=60)
            finally:
                uninstrument(pool)
        tel.stop()
        event = exception_event(receiver, "explode_in_worker")
    assert event["exception.type"] == "ValueError"
    stack = event["exception.stacktrace"]
    assert "explode_in_worker" in stack
    assert "worker could not handle 7" in stack
    assert len(stack) <= MAX_STACKTRACE


def test_an_inline_task_exports_its_stacktrace_too(tmp_path):
    @otelflow.task(name="inline-fail")
    def fail() -> None:
        recurse_then_fail(2)

    with HttpReceiver() as receiver:
        tel = start(tmp_path, receiver)
        with pytest.raises(RuntimeError):
            fail()
        tel.stop()
        stack = exception_event(receiver, "inline-fail")["exception.stacktrace"]
    assert stack.startswith("Traceback (most recent call last):")
    assert stack.count("recurse_then_fail") >= 3
    assert stack.endswith("RuntimeError: bottom")


def test_a_deep_stacktrace_is_cut_to_8_kib_with_a_marker(tmp_path):
    with HttpReceiver() as receiver:
        tel = start(tmp_path, receiver)
        trk = otelflow.tracker("engine")
        tid = trk.created(None, "deep")
        trk.started(tid)
        try:
            chained(60)
        except RuntimeError as exc:
            full = "".join(traceback.format_exception(exc))
            trk.failed(tid, exc)
        tel.stop()
        stack = exception_event(receiver, "deep")["exception.stacktrace"]
    assert len(full) > 2 * MAX_STACKTRACE
    assert len(stack) == MAX_STACKTRACE
    assert "characters cut by otelflow] ..." in stack
    assert stack.startswith("Traceback (most recent call last):")
    assert stack.endswith("RuntimeError: level 60")  # the last raise survives the cut


def test_a_given_stacktrace_is_used_and_bounded(tmp_path):
    with HttpReceiver() as receiver:
        tel = start(tmp_path, receiver)
        trk = otelflow.tracker("engine")
        tid = trk.created(None, "remote")
        trk.started(tid)
        trk.failed(tid, "RemoteError", message="lost", stacktrace="x" * 20_000)
        tel.stop()
        event = exception_event(receiver, "remote")
    assert event["exception.type"] == "RemoteError"
    assert len(event["exception.stacktrace"]) == MAX_STACKTRACE


def test_bounding_keeps_short_text_and_never_raises():
    assert bound_stacktrace("short") == "short"

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    text = format_stacktrace(Unprintable())
    assert text is None or "Unprintable" in text
