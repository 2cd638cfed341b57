"""The critical path of a run's task DAG, and where its time went.

The path is found backwards from the task that ended last: at each step, the critical
predecessor is the upstream task (``depends_on`` / span links) that ended last — the one
the task was really waiting for. The walk stops at a task with no known upstream.

Each step *owns* the stretch of wall time from its predecessor's end (for the first step,
its own creation) to its own end. That stretch is split by the task's lifecycle (see
:mod:`otelflow.events.waits`) into dependency wait (Created → Resolved), dispatch wait
(Resolved → handed to the executor: the engine's lag), queue wait (→ Started: no free
worker) and execution (Started → end); time before the task was even created (the
submitter made it late) is ``other``. The steps' stretches tile the path, so their sums
add up to its length. ``scheduling_wait_s`` (dispatch + queue wait) is kept for
compatibility.

Only dependencies are followed: when a task waited for a free worker rather than for an
upstream task, that shows up as queue wait on the path, not as another step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from otelflow.analysis._tables import TaskInfo
from otelflow.analysis.reader import Run
from otelflow.events.waits import dispatched_at

__all__ = ["CriticalPath", "PathStep", "critical_path", "format_critical_path"]

_NS = 1e9


@dataclass(frozen=True)
class PathStep:
    """One task on the critical path and its share of the path's time.

    Attributes:
        task_id: The task.
        task_name: Its name.
        workflow_id: Its workflow, if any.
        worker: Where it ran, if known.
        status: Its final state.
        window_start: Start of the stretch this step owns (ns): the predecessor's end, or
            for the first step its creation.
        end: The task's end (ns).
        dependency_wait_s: Part of the stretch spent waiting for dependencies.
        dispatch_wait_s: Part spent ready but not yet handed to the executor.
        queue_wait_s: Part spent handed to the executor but not yet running.
        scheduling_wait_s: ``dispatch_wait_s + queue_wait_s``.
        execution_s: Part spent running.
        other_s: Part before the task was created.
    """

    task_id: str
    task_name: str
    workflow_id: str | None
    worker: str | None
    status: str
    window_start: int
    end: int
    dependency_wait_s: float
    scheduling_wait_s: float
    execution_s: float
    other_s: float
    dispatch_wait_s: float = 0.0
    queue_wait_s: float = 0.0

    @property
    def length_s(self) -> float:
        """The stretch this step owns, in seconds."""
        return max(0, self.end - self.window_start) / _NS

    def to_dict(self) -> dict[str, Any]:
        """The step as a JSON-ready dict."""
        return {
            "task_id": self.task_id,
            "task_name": self.task_name,
            "workflow_id": self.workflow_id,
            "worker": self.worker,
            "status": self.status,
            "window_start": self.window_start,
            "end": self.end,
            "length_s": self.length_s,
            "dependency_wait_s": self.dependency_wait_s,
            "dispatch_wait_s": self.dispatch_wait_s,
            "queue_wait_s": self.queue_wait_s,
            "scheduling_wait_s": self.scheduling_wait_s,
            "execution_s": self.execution_s,
            "other_s": self.other_s,
        }


@dataclass(frozen=True)
class CriticalPath:
    """The chain of tasks that determined when the last task ended, first step first."""

    steps: tuple[PathStep, ...]

    @property
    def start(self) -> int:
        """When the path began (the first task's creation), ns."""
        return self.steps[0].window_start

    @property
    def end(self) -> int:
        """When the path ended (the last task's end), ns."""
        return self.steps[-1].end

    @property
    def length_s(self) -> float:
        """End − start, in seconds."""
        return max(0, self.end - self.start) / _NS

    def total(self, part: str) -> float:
        """Sum of one part over the steps: ``dependency_wait_s``, ``dispatch_wait_s``,
        ``queue_wait_s``, ``scheduling_wait_s``, ``execution_s`` or ``other_s``."""
        return float(sum(getattr(s, part) for s in self.steps))

    def to_dict(self) -> dict[str, Any]:
        """The path as a JSON-ready dict: totals plus one dict per step."""
        return {
            "length_s": self.length_s,
            "start_time": self.start,
            "end_time": self.end,
            "tasks": len(self.steps),
            "dependency_wait_s": self.total("dependency_wait_s"),
            "dispatch_wait_s": self.total("dispatch_wait_s"),
            "queue_wait_s": self.total("queue_wait_s"),
            "scheduling_wait_s": self.total("scheduling_wait_s"),
            "execution_s": self.total("execution_s"),
            "other_s": self.total("other_s"),
            "steps": [s.to_dict() for s in self.steps],
        }


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def _step(task: TaskInfo, window_start: int) -> PathStep:
    end = task.ended
    assert end is not None
    created = task.created if task.created is not None else window_start
    ready = task.ready if task.ready is not None else created
    ready = max(ready, created)
    started = task.started if task.started is not None else end
    started = min(max(started, ready), end)
    hand = dispatched_at(ready, task.submitted, task.queued, started)
    w0, w1 = window_start, max(window_start, end)
    return PathStep(
        task_id=task.task_id,
        task_name=task.name or "task",
        workflow_id=task.workflow_id,
        worker=task.worker,
        status=task.state,
        window_start=window_start,
        end=end,
        other_s=_overlap(w0, w1, w0, created) / _NS,
        dependency_wait_s=_overlap(w0, w1, created, ready) / _NS,
        scheduling_wait_s=_overlap(w0, w1, ready, started) / _NS,
        dispatch_wait_s=_overlap(w0, w1, ready, hand) / _NS,
        queue_wait_s=_overlap(w0, w1, hand, started) / _NS,
        execution_s=_overlap(w0, w1, started, end) / _NS,
    )


def critical_path(
    tasks: Run | Mapping[str, TaskInfo] | Iterable[TaskInfo],
    *,
    workflow_id: str | None = None,
) -> CriticalPath | None:
    """Compute the critical path of a run or of a set of tasks.

    Args:
        tasks: A :class:`~otelflow.analysis.reader.Run`, or its tasks (by id or as records).
        workflow_id: Only follow tasks of this workflow.

    Returns:
        The path, or None if no task ended.
    """
    if isinstance(tasks, Run):
        by_id: Mapping[str, TaskInfo] = tasks.tasks()
    elif isinstance(tasks, Mapping):
        by_id = tasks
    else:
        by_id = {t.task_id: t for t in tasks}
    ended = [t for t in by_id.values() if t.ended is not None and (workflow_id is None or t.workflow_id == workflow_id)]
    if not ended:
        return None
    last = max(ended, key=lambda t: (t.ended, t.task_id))
    chain = [last]
    seen = {last.task_id}
    cur = last
    while True:
        preds = [
            by_id[d]
            for d in cur.depends_on
            if d in by_id
            and d not in seen
            and by_id[d].ended is not None
            and (workflow_id is None or by_id[d].workflow_id == workflow_id)
        ]
        if not preds:
            break
        cur = max(preds, key=lambda t: (t.ended, t.task_id))
        seen.add(cur.task_id)
        chain.append(cur)
    chain.reverse()
    steps: list[PathStep] = []
    first = chain[0]
    window_start = first.created if first.created is not None else first.ended
    for task in chain:
        step = _step(task, window_start)  # type: ignore[arg-type]
        steps.append(step)
        window_start = step.end
    return CriticalPath(tuple(steps))


def _s(v: float) -> str:
    return f"{v:.3f}s"


def format_critical_path(path: CriticalPath | dict[str, Any] | None, *, max_steps: int = 20) -> str:
    """Render a critical path (object or its ``to_dict()``) as terminal text."""
    if path is None:
        return "Critical path: no task ended.\n"
    d = path.to_dict() if isinstance(path, CriticalPath) else path
    lines = [
        f"Critical path: {d['tasks']} tasks, {_s(d['length_s'])} — "
        f"execution {_s(d['execution_s'])}, queue wait {_s(d.get('queue_wait_s', 0.0))}, "
        f"dispatch wait {_s(d.get('dispatch_wait_s', 0.0))}, "
        f"dependency wait {_s(d['dependency_wait_s'])}, other {_s(d['other_s'])}",
    ]
    steps = d["steps"]
    shown = steps if len(steps) <= max_steps else [*steps[: max_steps // 2], None, *steps[-max_steps // 2 :]]
    header = (
        f"  {'#':>3}  {'task':<28} {'name':<18} {'length':>9} {'dep wait':>9} {'dispatch':>9} {'queue':>9} "
        f"{'exec':>9}"
    )
    lines.append(header)
    for i, st in enumerate(shown):
        if st is None:
            lines.append(f"  ... {len(steps) - max_steps} more steps ...")
            continue
        n = i + 1 if i < max_steps // 2 or len(steps) <= max_steps else len(steps) - (len(shown) - 1 - i)
        lines.append(
            f"  {n:>3}  {_clip(st['task_id'], 28):<28} {_clip(st['task_name'], 18):<18} "
            f"{_s(st['length_s']):>9} {_s(st['dependency_wait_s']):>9} "
            f"{_s(st.get('dispatch_wait_s', 0.0)):>9} {_s(st.get('queue_wait_s', 0.0)):>9} "
            f"{_s(st['execution_s']):>9}"
        )
    return "\n".join(lines) + "\n"


def _clip(value: Any, n: int) -> str:
    s = str(value)
    return s if len(s) <= n else s[: n - 1] + "…"
