"""The app and agent bench_parsl_academy.py runs (importable by HTEX workers and agent processes)."""

from __future__ import annotations

from academy.agent import Agent, action
from parsl import python_app


@python_app
def noop() -> None:
    return None


class Noop(Agent):
    @action
    async def noop(self) -> None:
        return None
