"""The id of the task running in the current context (thread / asyncio task).

Set wherever a task's span is made current (``@otelflow.task``, the executor wrappers, a
worker process's task context) so that what the task does — a ``logging`` call, most
of all — can name its task without a lookup. A ``ContextVar``: O(1), no lock.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

__all__ = ["current_task_id", "enter_task", "exit_task", "task_id_var"]

_task_id: ContextVar[str | None] = ContextVar("otelflow_task_id", default=None)

current_task_id = _task_id.get
"""The running task's id, or None outside any task."""

task_id_var = _task_id
"""The variable itself, for a hot path (``@otelflow.task``): ``set`` is :func:`enter_task`,
``reset`` is :func:`exit_task` (which also ignores a token from another context)."""


def enter_task(task_id: str | None) -> Token[str | None]:
    """Make ``task_id`` the current task; undo with :func:`exit_task`."""
    return _task_id.set(task_id)


def exit_task(token: Token[str | None] | None) -> None:
    """Undo :func:`enter_task` (a token from another context is ignored)."""
    if token is None:
        return
    try:
        _task_id.reset(token)
    except ValueError:  # created in another context: nothing of ours to undo here
        pass
