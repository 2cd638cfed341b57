"""A failed task's stack trace as text, bounded (OTel ``exception.stacktrace``).

:func:`format_stacktrace` formats an exception with its cause chain, so an exception
raised in a worker process and re-raised by ``concurrent.futures`` (whose ``__cause__``
holds the worker's formatted traceback) names the function that raised. Text longer than
:data:`MAX_STACKTRACE` keeps its head and tail around a marker saying how much was cut:
the outermost frames and the innermost (where it raised) are what a reader needs.
"""

from __future__ import annotations

import traceback

__all__ = ["MAX_STACKTRACE", "bound_stacktrace", "format_stacktrace"]

MAX_STACKTRACE = 8192
"""Most characters of a stack trace kept on an event or span."""


def bound_stacktrace(text: str, limit: int = MAX_STACKTRACE) -> str:
    """``text`` if it fits in ``limit`` characters, else its head and tail around a cut marker."""
    if len(text) <= limit:
        return text
    marker = f"\n... [{len(text) - limit} characters cut by otelflow] ...\n"
    keep = max(0, limit - len(marker))
    head = keep // 2
    return text[:head] + marker + text[len(text) - (keep - head) :]


def format_stacktrace(exc: BaseException, limit: int = MAX_STACKTRACE) -> str | None:
    """The exception's traceback (with its causes) as text, bounded; None if it cannot be
    formatted (a broken ``__str__``, a recursion in the chain) — never raises."""
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:  # noqa: BLE001 - a stack trace is a nicety; never fail the caller
        return None
    return bound_stacktrace(text.rstrip("\n"), limit)
