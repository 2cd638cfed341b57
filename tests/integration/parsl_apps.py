"""Parsl apps for tests/integration/test_parsl.py, in a module HTEX workers can import."""

from __future__ import annotations

import os
import time

from opentelemetry import trace
from parsl import bash_app, join_app, python_app


@python_app
def sleepy(x: int, inputs: tuple[int, ...] = ()) -> int:
    """Sleep 0.2 s inside a user span; return x plus the inputs."""
    with trace.get_tracer("parsl-test").start_as_current_span("user-work"):
        time.sleep(0.2)
    return x + sum(inputs)


@python_app
def boom() -> None:
    time.sleep(0.05)
    raise ValueError("boom from the app")


@python_app
def flaky(marker: str) -> str:
    """Fail the first time (no marker file yet), succeed the second."""
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write("tried")
        raise RuntimeError("first attempt fails")
    return "second attempt ok"


@python_app(cache=True)
def cached(x: int) -> int:
    time.sleep(0.05)
    return x * 10


@join_app
def outer(x: int):  # type: ignore[no-untyped-def]
    return sleepy(x)


@bash_app
def shout(word: str, stdout: str | None = None) -> str:
    return f"echo {word}"


def retry_only_flaky(exc: BaseException, task_record: dict) -> int:  # type: ignore[type-arg]
    """Parsl retry_handler: only ``flaky`` is retried (the others cost more than retries=1)."""
    return 1 if task_record["func_name"] == "flaky" else 2


@python_app
def write_file(text: str, outputs: tuple = ()) -> None:  # type: ignore[type-arg]
    with open(outputs[0].filepath, "w") as fh:
        fh.write(text)


@python_app
def read_file(inputs: tuple = ()) -> str:  # type: ignore[type-arg]
    with open(inputs[0].filepath) as fh:
        return fh.read()
