"""``otelflow.instrument(x)``: one front door, handing ``x`` to the integration for its engine.

The engine is told from the module of ``x``'s class (and its bases), so checking imports no
engine: ``import otelflow`` and ``instrument(ThreadPoolExecutor())`` never import Dask,
Parsl or AsyncFlow. Each integration keeps its own ``instrument`` with engine-specific
options; this module only routes, and names the extra to install when one is missing.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from otelflow.errors import OtelflowError

if TYPE_CHECKING:
    from otelflow.session import Telemetry

__all__ = ["instrument", "is_instrumented", "uninstrument"]

T = TypeVar("T")

# (class-module prefixes, integration module, pip extra). First match wins.
_ENGINES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("radical.asyncflow",), "otelflow.integrations.asyncflow", "asyncflow"),
    (("parsl.",), "otelflow.integrations.parsl", "parsl"),
    (("distributed.", "dask."), "otelflow.integrations.dask", "dask"),
)


def _engine(obj: object) -> tuple[str, str] | None:
    modules = {getattr(c, "__module__", "") or "" for c in type(obj).__mro__}
    for prefixes, integration, extra in _ENGINES:
        if any(m.startswith(prefixes) for m in modules):
            return integration, extra
    return None


def _load(integration: str, extra: str, obj: object) -> ModuleType:
    try:
        return importlib.import_module(integration)
    except ImportError as exc:
        raise OtelflowError(
            f"otelflow.instrument() needs the {extra} integration for {type(obj).__name__} ({exc}); "
            f"install it with: pip install 'otelflow[{extra}]'."
        ) from exc


def instrument(
    target: T,
    *,
    backend: str | None = None,
    telemetry: Telemetry | None = None,
    worker_telemetry: bool = True,
) -> T:
    """Record every task run through ``target``; returns ``target``. Idempotent (a repeat warns).

    Args:
        target: A ``concurrent.futures.Executor`` (thread or process pool, or any other), a
            Dask ``distributed.Client``, a RADICAL AsyncFlow ``WorkflowEngine`` or a Parsl
            ``DataFlowKernel``. Each has its own page in docs/ for what is recorded.
        backend: Engine name on every task (a metric attribute); executors only.
        telemetry: Record on this telemetry instead of the process's current one.
        worker_telemetry: Let worker processes join the run, so that spans, events and logs
            made inside tasks are recorded too. False measures the tasks only.

    Raises:
        TypeError: ``target`` is none of these.
        OtelflowError: ``target``'s engine needs an extra that is not installed.
    """
    found = _engine(target)
    if found is None:
        from otelflow.integrations import futures

        return futures.instrument(target, backend=backend, telemetry=telemetry, worker_telemetry=worker_telemetry)  # type: ignore[type-var]
    mod = _load(*found, target)
    if found[0].endswith(".dask"):
        out: T = mod.instrument_client(target, telemetry=telemetry, user_telemetry=worker_telemetry)
    else:
        out = mod.instrument(target, telemetry=telemetry, worker_telemetry=worker_telemetry)
    return out


def uninstrument(target: T) -> T:
    """Undo :func:`instrument` on ``target`` (where its integration can); returns it."""
    found = _engine(target)
    if found is None:
        from otelflow.integrations import futures

        return futures.uninstrument(target)  # type: ignore[type-var]
    mod = _load(*found, target)
    undo = getattr(mod, "uninstrument", None)
    if undo is None:
        raise OtelflowError(
            f"{type(target).__name__} cannot be uninstrumented; close it (and its cluster) instead."
        )
    out: T = undo(target)
    return out


def is_instrumented(target: Any) -> bool:
    """True if :func:`instrument` was applied to ``target`` (and not undone)."""
    found = _engine(target)
    if found is None:
        from otelflow.integrations import futures

        return futures.is_instrumented(target)
    return bool(_load(*found, target).is_instrumented(target))
