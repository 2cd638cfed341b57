"""The workflow the AsyncFlow tests run on the real engine (radical-asyncflow 0.6).

A diamond a → (b, c) → d inside ``flow.workflow_scope("wf-x")``, a ``@flow.block`` holding
e → f, a task g that raises after 0.1 s and h that depends on g. Every other task sleeps
0.2 s in the worker. Task functions live at module level so process pools pickle them by
reference.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

SLEEP = 0.2


Result = tuple[int, int, int]  # (value, start ns, end ns) as the task itself measured them


def value(r: Result | int) -> int:
    return r[0] if isinstance(r, tuple) else r


async def _sleep(*upstream: Result | int) -> Result:
    start = time.time_ns()
    await asyncio.sleep(SLEEP)
    return sum(value(u) for u in upstream) + 1, start, time.time_ns()


# AsyncFlow names a task by its function's __name__: one function per task name.
async def a() -> Result:
    return await _sleep()


async def b(x: Result | int) -> Result:
    return await _sleep(x)


async def c(x: Result | int) -> Result:
    return await _sleep(x)


async def d(x: Result, y: Result) -> Result:
    return await _sleep(x, y)


async def e() -> Result:
    return await _sleep()


async def f(x: Result) -> Result:
    return await _sleep(x)


async def g() -> None:
    await asyncio.sleep(0.1)
    raise ValueError("boom")


async def h(x: Any) -> Any:
    return x


def pool(kind: str) -> Executor:
    return ThreadPoolExecutor(2) if kind == "threads" else ProcessPoolExecutor(2)


async def make_flow(kind: str, work_dir: str) -> Any:
    from radical.asyncflow import WorkflowEngine
    from rhapsody.backends import ConcurrentExecutionBackend

    backend = await ConcurrentExecutionBackend(pool(kind))
    return await WorkflowEngine.create(backend, work_dir=work_dir)


async def run_workflow(flow: Any) -> dict[str, Any]:
    """Run the workflow on ``flow``; return what the user code saw.

    ``seen["futures"]`` holds the 0.2 s tasks' futures: their results carry the times each
    task measured itself, to compare with what was recorded.
    """
    a_, b_, c_, d_, e_, f_, g_, h_ = (flow.function_task(fn) for fn in (a, b, c, d, e, f, g, h))

    futures: dict[str, Any] = {}

    @flow.block
    async def pair() -> int:
        futures["e"] = te = e_()
        futures["f"] = tf = f_(te)
        return value(await tf)

    seen: dict[str, Any] = {"futures": futures}
    async with flow.workflow_scope("wf-x") as wid:
        seen["workflow_id"] = wid
        futures["a"] = ta = a_()
        futures["b"], futures["c"] = tb, tc = b_(ta), c_(ta)
        futures["d"] = td = d_(tb, tc)
        blk = pair()
        tg = g_()
        th = h_(tg)
        seen["d"] = value(await td)
        seen["block"] = await blk
        for name, fut in (("g", tg), ("h", th)):
            try:
                await fut
            except Exception as exc:
                seen[name] = exc
    return seen
