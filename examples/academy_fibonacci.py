"""Two Academy agents in their own processes, recorded by otelflow: where did the time go?

A Coordinator agent computes Fibonacci numbers by asking an Adder agent to add, and each
addition sleeps 500 ms. The actions' sleeps add up to n × 0.5 s; the run shows, per action,
where the rest went: sending the request, waiting at the agent, executing, the response.

    python examples/academy_fibonacci.py [n]        # then: otelflow report <run dir>
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import socket
import sys
from concurrent.futures import ProcessPoolExecutor

from academy.agent import Agent, action
from academy.exchange.cloud.client import spawn_http_exchange
from academy.handle import Handle
from academy.manager import Manager
from opentelemetry import trace

import otelflow
from otelflow.integrations.academy import OtelflowLogConfig

SLEEP = 0.5


class Adder(Agent):
    """Adds two numbers, slowly."""

    @action
    async def add(self, a: int, b: int) -> int:
        with trace.get_tracer("fibonacci").start_as_current_span("add.sleep"):
            await asyncio.sleep(SLEEP)
        logging.getLogger("fibonacci").info("added %d + %d", a, b)
        return a + b


class Coordinator(Agent):
    """Computes fib(n) with n - 1 calls to the Adder."""

    def __init__(self, adder: Handle[Adder]) -> None:
        super().__init__()
        self.adder = adder

    @action
    async def fib(self, n: int) -> int:
        a, b = 0, 1
        for _ in range(n - 1):
            a, b = b, await self.adder.add(a, b)
        return b


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(n: int) -> int:
    log_config = OtelflowLogConfig()
    spawn = multiprocessing.get_context("spawn")
    with spawn_http_exchange("127.0.0.1", free_port()) as factory:
        async with await Manager.from_exchange_factory(
            factory, executors=ProcessPoolExecutor(2, mp_context=spawn), log_config=log_config
        ) as manager:
            adder = await manager.launch(Adder)
            coordinator = await manager.launch(Coordinator, args=(adder,))
            with otelflow.workflow_scope("fibonacci"):
                result = await coordinator.fib(n)
            await manager.shutdown(coordinator, blocking=True)
            await manager.shutdown(adder, blocking=True)
    return result


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with otelflow.start_telemetry(checkpoint_path="./telemetry", resource_poll_interval=0) as telemetry:
        print(f"fib({n}) = {asyncio.run(main(n))}")
    print(f"run directory: {telemetry.run_dir}   (otelflow report {telemetry.run_dir})")
