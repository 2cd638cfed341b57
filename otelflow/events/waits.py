"""Where a task's lifetime went: the one definition every view uses.

A task's lifetime (Created → its terminal event) is split at four points:

* **dependency wait** — Created → Resolved (its last upstream task completed);
* **dispatch wait** — Resolved → handed to the executor: the engine's own lag (an engine
  that polls its task graph once a second shows it here);
* **queue wait** — handed to the executor → Started: waiting for a free worker;
* **execution** — Started → Completed | Failed | Canceled.

"Handed to the executor" is the earlier of TaskSubmitted and TaskQueued reported at or
after Resolved (an engine that submits every task up front, before it is ready, reports
its TaskQueued as the hand-over; one that reports neither has no dispatch wait). It is
clamped between Resolved and Started, so for every task that ran the four parts add up
exactly to its lifetime. A task without TaskResolved is ready at TaskSubmitted, else at
TaskCreated, and has no dependency wait.

``scheduling wait`` (Resolved → Started) is kept for compatibility: it is always
dispatch wait + queue wait.

Times are integers in ns since the epoch; 0 or None means "not reported".
"""

from __future__ import annotations

__all__ = ["dispatched_at", "ready_at"]


def ready_at(created: int | None, resolved: int | None, submitted: int | None) -> int | None:
    """When the task was ready to run: Resolved, else Submitted, else Created."""
    return resolved or submitted or created or None


def dispatched_at(ready: int, submitted: int | None, queued: int | None, started: int | None) -> int:
    """When the task was handed to the executor (see the module docstring), clamped to
    ``[ready, started]``."""
    hand = 0
    if submitted and submitted >= ready:
        hand = submitted
    if queued and queued >= ready and (not hand or queued < hand):
        hand = queued
    if not hand:
        hand = ready
    if started and hand > started:
        hand = max(ready, started)
    return hand
