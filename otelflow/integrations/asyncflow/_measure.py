"""What runs in the worker: kept tiny so a process-pool worker imports almost nothing.

AsyncFlow's backends call ``asyncio.run(func(*args))`` only when
``asyncio.iscoroutinefunction(func)`` is true, so the task function we hand them must stay
``async def``: ``functools.partial(run_measured, fn, task_id, carrier)`` is one (``inspect``
unwraps partials), and cloudpickle sends it by reference, not by value.

For process pools the carrier travels as ``pickle`` bytes made once per scope: cloudpickle
pickles a msgspec struct field by field in Python (~20 µs a task), bytes it copies.
"""

from __future__ import annotations

import pickle
from typing import Any

from otelflow.toolkit import AsyncMeasured, Carrier, Returned

__all__ = ["run_measured"]

_carriers: dict[bytes, Carrier | None] = {}


def _carrier(c: Carrier | bytes | None) -> Carrier | None:
    if not isinstance(c, bytes):
        return c
    got = _carriers.get(c)
    if got is None and c not in _carriers:
        try:
            loaded = pickle.loads(c)
        except Exception:  # noqa: BLE001 - a broken carrier only costs the task its trace context
            loaded = None
        got = loaded if isinstance(loaded, Carrier) else None
        if len(_carriers) >= 256:  # one per scope: a few; bounded all the same
            _carriers.clear()
        _carriers[c] = got
    return got


async def run_measured(
    fn: Any, task_id: str, carrier: Carrier | bytes | None, /, *args: Any, **kwargs: Any
) -> Returned[Any]:
    """Run the task function measured: its value and outcome come back together."""
    return await AsyncMeasured(fn, task_id, _carrier(carrier))(*args, **kwargs)
