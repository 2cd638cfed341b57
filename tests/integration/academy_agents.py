"""Academy agents for tests/integration/test_academy.py (importable by spawned agent processes)."""

from __future__ import annotations

import asyncio
import logging

from academy.agent import Agent, action
from academy.handle import Handle
from opentelemetry import trace

SLEEP = 0.2


class Adder(Agent):
    """Adds two numbers after a sleep, inside a user span, logging the sum."""

    @action
    async def add(self, a: int, b: int) -> int:
        with trace.get_tracer("academy-test").start_as_current_span("add.sleep"):
            await asyncio.sleep(SLEEP)
        logging.getLogger("academy_test").warning("added %d + %d", a, b)
        return a + b

    @action
    async def fail(self) -> None:
        await asyncio.sleep(0.01)
        raise ValueError("adder refuses")


class Coordinator(Agent):
    """fib(n) with n - 1 calls to the Adder's ``add``."""

    def __init__(self, adder: Handle[Adder]) -> None:
        super().__init__()
        self.adder = adder

    @action
    async def fib(self, n: int) -> int:
        a, b = 0, 1
        for _ in range(n - 1):
            a, b = b, await self.adder.add(a, b)
        return b


def logging_state() -> tuple[object, ...]:
    """Handlers, levels and filters of the root logger and Academy's loggers."""
    names = ("", "academy", "academy.handle", "academy.runtime", "academy.manager")
    return tuple(
        (n, tuple(logging.getLogger(n).handlers), logging.getLogger(n).level, tuple(logging.getLogger(n).filters))
        for n in names
    )


def visit_and_leave(config: object) -> dict[str, object]:
    """In a fresh process: the logging state before, while and after the config is initialized."""
    file_handler = logging.FileHandler("/dev/null")  # the process's own logging, e.g. a worker log
    logging.getLogger().addHandler(file_handler)
    logging.getLogger().setLevel(logging.INFO)
    before = logging_state()
    uninit = config.init_logging()  # type: ignore[attr-defined]
    during = logging_state()
    logging.getLogger("academy.handle").debug("a debug record nobody else gets")
    uninit()
    after = logging_state()
    return {
        "same_after": after == before,
        "changed_during": during != before,
        "own_handler_kept": file_handler in logging.getLogger().handlers,
        "root_handlers_during": len(during[0][1]) - len(before[0][1]),
    }
