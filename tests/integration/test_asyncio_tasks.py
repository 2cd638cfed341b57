"""Instrumented asyncio tasks: lifecycle, scopes, dependencies, failures, cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import trace

import otelflow
from otelflow.integrations import UpstreamFailedError
from otelflow.integrations import asyncio as oasyncio
from tests.conftest import read_lines


@pytest.fixture
def tel(tmp_path):
    t = otelflow.start_telemetry(checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={})
    yield t
    t.stop()


def task_spans(run_dir) -> dict[str, dict[str, Any]]:
    return {s["attributes"]["otelflow.task.id"]: s for s in read_lines(run_dir, "span") if s["kind"] == "task"}


async def value(v: Any, delay: float = 0.0) -> Any:
    await asyncio.sleep(delay)
    return v


async def fail(delay: float = 0.0) -> None:
    await asyncio.sleep(delay)
    raise ValueError("nope")


def test_create_task_records_the_lifecycle_in_the_callers_scope(tel):
    async def main():
        with otelflow.workflow_scope("async-wf") as wid, otelflow.block("load") as bid:
            t = oasyncio.create_task(value(5, 0.05), name="load-one")
        return await t, wid, bid, oasyncio.task_id_of(t), t.get_name()

    result, wid, bid, tid, name = asyncio.run(main())
    assert result == 5 and name == "load-one"
    tel.stop()
    span = task_spans(tel.run_dir)[tid]
    assert span["name"] == "load-one" and span["status"] == "completed"
    assert span["attributes"]["otelflow.workflow.id"] == wid
    assert span["attributes"]["otelflow.block.id"] == bid
    assert span["attributes"]["otelflow.task.backend"] == "asyncio"
    ev = dict(span["events"])
    assert ev["TaskCreated"] <= ev["TaskResolved"] <= ev["TaskSubmitted"] <= ev["TaskStarted"]
    # The 0.05 s sleep sets the floor; the ceiling leaves a loaded machine a second of stalls.
    assert 0.04 < (ev["TaskCompleted"] - ev["TaskStarted"]) / 1e9 < 1.05


def test_depends_on_waits_for_upstreams_and_links_them(tel):
    order: list[str] = []

    async def step(
        tag: str, delay: float, after: asyncio.Event | None = None, done: asyncio.Event | None = None
    ) -> str:
        await asyncio.sleep(delay)
        if after is not None:
            await after.wait()
        order.append(tag)
        if done is not None:
            done.set()
        return tag

    async def main():
        # a, made first, ends last: it waits for b's end, not on the sleeps' 40 ms difference,
        # which a stall between the two tasks' first steps could undo.
        b_done = asyncio.Event()
        a = oasyncio.create_task(step("a", 0.05, after=b_done))
        b = oasyncio.create_task(step("b", 0.01, done=b_done))
        c = oasyncio.create_task(step("c", 0), depends_on=[a, b])
        await c
        return a, b, c

    a, b, c = asyncio.run(main())
    assert order == ["b", "a", "c"]
    tel.stop()
    spans = task_spans(tel.run_dir)
    ids = [oasyncio.task_id_of(t) for t in (a, b, c)]
    sc = spans[ids[2]]
    assert set(sc["links"]) == {spans[ids[0]]["span_id"], spans[ids[1]]["span_id"]}
    ev_c = dict(sc["events"])
    assert ev_c["TaskResolved"] >= dict(spans[ids[0]]["events"])["TaskCompleted"]
    assert ev_c["TaskSubmitted"] >= ev_c["TaskResolved"]


def test_upstream_failure_and_cancellation_propagate_without_running(tel):
    ran: list[str] = []

    async def never(tag: str) -> None:
        ran.append(tag)

    async def main():
        bad = oasyncio.create_task(fail(0.01))
        slow = oasyncio.create_task(value(1, 5))
        after_bad = oasyncio.create_task(never("after_bad"), depends_on=[bad])
        after_slow = oasyncio.create_task(never("after_slow"), depends_on=[slow])
        await asyncio.sleep(0.05)
        slow.cancel()
        results = await asyncio.gather(bad, slow, after_bad, after_slow, return_exceptions=True)
        return results, [oasyncio.task_id_of(t) for t in (bad, slow, after_bad, after_slow)]

    results, ids = asyncio.run(main())
    assert isinstance(results[0], ValueError)
    assert isinstance(results[1], asyncio.CancelledError)
    assert isinstance(results[2], UpstreamFailedError) and isinstance(results[2].__cause__, ValueError)
    assert isinstance(results[3], asyncio.CancelledError)
    assert ran == []
    tel.stop()
    spans = task_spans(tel.run_dir)
    assert [spans[i]["status"] for i in ids] == ["failed", "canceled", "failed", "canceled"]
    assert spans[ids[0]]["attributes"]["error.type"] == "ValueError"
    assert "TaskStarted" not in dict(spans[ids[2]]["events"])


def test_a_task_canceled_before_it_ran_is_canceled_and_its_coroutine_closed(tel, recwarn):
    async def main():
        t = oasyncio.create_task(value(1))
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        return oasyncio.task_id_of(t)

    tid = asyncio.run(main())
    assert not [w for w in recwarn if "never awaited" in str(w.message)]
    tel.stop()
    span = task_spans(tel.run_dir)[tid]
    assert span["status"] == "canceled" and "TaskStarted" not in dict(span["events"])


def test_gather_makes_each_coroutine_a_task(tel):
    async def main():
        with otelflow.workflow_scope("fan-out"):
            return await oasyncio.gather(value(1), value(2), fail(), return_exceptions=True)

    r = asyncio.run(main())
    assert r[:2] == [1, 2] and isinstance(r[2], ValueError)
    summary = tel.stop()
    assert summary["tasks"]["completed"] == 2 and summary["tasks"]["failed"] == 1
    assert {s["name"] for s in task_spans(tel.run_dir).values()} == {"value", "fail"}


def test_the_task_span_is_current_inside_the_coroutine(tel):
    async def work():
        with trace.get_tracer("user").start_as_current_span("inner"):
            await asyncio.sleep(0)
        return trace.get_current_span().get_span_context().span_id

    async def main():
        t = oasyncio.create_task(work())
        return await t, oasyncio.task_id_of(t)

    current, tid = asyncio.run(main())
    tel.stop()
    task = task_spans(tel.run_dir)[tid]
    assert current == int(task["span_id"], 16)
    inner = next(s for s in read_lines(tel.run_dir, "span") if s["name"] == "inner")
    assert inner["parent_span_id"] == task["span_id"]


def test_without_telemetry_it_behaves_like_asyncio():
    async def main():
        a = oasyncio.create_task(value(1, 0.01))
        b = oasyncio.create_task(value(2), depends_on=[a])
        return await oasyncio.gather(a, b), oasyncio.task_id_of(b)

    assert asyncio.run(main()) == ([1, 2], None)


def test_bad_arguments_are_clear_errors():
    async def main():
        with pytest.raises(TypeError, match="coroutine"):
            oasyncio.create_task(value)  # type: ignore[arg-type]
        coro = value(1)
        with pytest.raises(TypeError, match="depends_on"):
            oasyncio.create_task(coro, depends_on=[42])  # type: ignore[list-item]

    asyncio.run(main())
