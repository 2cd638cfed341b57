"""What runs in the worker: kept tiny so a process-pool worker imports almost nothing.

AsyncFlow's backends call ``asyncio.run(func(*args))`` only when
``asyncio.iscoroutinefunction(func)`` is true, so the task function we hand them must stay
``async def``: ``functools.partial(run_measured, measured)`` is one (``inspect`` unwraps
partials) and cloudpickle pickles it by reference, not by value.
"""

from __future__ import annotations

from typing import Any

from otelflow.toolkit import AsyncMeasured, Returned

__all__ = ["run_measured"]


async def run_measured(measured: AsyncMeasured, /, *args: Any, **kwargs: Any) -> Returned[Any]:
    """Run the task function through ``measured``: its value and outcome come back together."""
    return await measured(*args, **kwargs)
