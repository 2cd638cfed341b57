"""What is "current", kept in one small module: the process's telemetry and the context's scope.

Module-level functions (``otelflow.emit()``, scopes, ``@task``) act on the current
:class:`~otelflow.session.Telemetry`; a ``Telemetry`` object also works on its own.
Tests reset it with :func:`reset`. The innermost workflow/block scope lives in the
``contextvars`` variable :data:`scope_var` (set by :mod:`otelflow.scope`), so the modules below
scopes — events stamping their ids — read it here without importing anything above them.
"""

from __future__ import annotations

import os
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otelflow.scope import Scope
    from otelflow.session import Telemetry

_lock = threading.Lock()
_current: Telemetry | None = None


scope_var: ContextVar[Scope | None] = ContextVar("otelflow_scope", default=None)
"""The innermost entered workflow/block scope of this context (see :mod:`otelflow.scope`)."""


def current_ids() -> tuple[str | None, str | None, str | None]:
    """Return ``(session_id, workflow_id, block_id)`` for the current context."""
    tel = _current
    scope = scope_var.get()
    session_id = tel.session_id if tel is not None else None
    if scope is None:
        return session_id, None, None
    return session_id, scope.workflow_id, scope.block_id


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
