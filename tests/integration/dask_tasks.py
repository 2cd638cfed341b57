"""Task functions for the Dask tests: a module of its own, so `dask worker` processes
started from the command line (PYTHONPATH = the repository) import them by reference."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from opentelemetry import trace

import otelflow

otelflow.define_event("tests.DaskNote", n=int)


def square(x: int) -> int:
    return x * x


def inc(x: int) -> int:
    return x + 1


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def nap_unless_on(seconds: float, stall_on: str) -> float:
    """Sleep ``seconds``; on the worker at address ``stall_on`` (one a test kills) 120 s."""
    from distributed import get_worker

    time.sleep(120.0 if get_worker().address == stall_on else seconds)
    return seconds


def traced(n: int) -> int:
    """A log record and a user event in the task, then a user span."""
    logging.getLogger("tests.dask").warning("inside task %d", n)
    otelflow.emit("tests.DaskNote", n=n)
    with trace.get_tracer("tests.dask").start_as_current_span("user-work"):
        pass
    return n


def flaky(marker: str) -> str:
    """Fails the first time (leaving ``marker``), succeeds the second."""
    path = Path(marker)
    if not path.exists():
        path.write_text("x")
        raise ValueError("first attempt fails")
    return "second attempt"


def boom() -> None:
    raise KeyError("missing")
