"""The one process-wide "current telemetry", kept in one small module.

Module-level functions (``otelflow.emit()``, scopes, ``@task``) act on the current
:class:`~otelflow.session.Telemetry`; a ``Telemetry`` object also works on its own.
Tests reset it with :func:`reset`.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otelflow.session import Telemetry

_lock = threading.Lock()
_current: Telemetry | None = None


def current() -> Telemetry | None:
    """Return the running telemetry of this process, or None."""
    return _current


def install(telemetry: Telemetry) -> bool:
    """Make ``telemetry`` current unless another one already is. Returns True if installed."""
    global _current
    with _lock:
        if _current is not None and _current is not telemetry:
            return False
        _current = telemetry
        return True


def uninstall(telemetry: Telemetry) -> None:
    """Forget ``telemetry`` if it is the current one."""
    global _current
    with _lock:
        if _current is telemetry:
            _current = None


def reset() -> None:
    """Forget the current telemetry without stopping it (for tests)."""
    global _current
    _current = None


def _after_fork_in_child() -> None:
    # A forked child must never write to the parent's files or wait on its threads: it
    # starts with no telemetry. It may call start_telemetry() (or run worker-side
    # instrumentation, which needs none).
    global _current, _lock
    _lock = threading.Lock()
    if _current is not None:
        _current._forked()
    _current = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
