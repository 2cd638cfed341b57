"""Regression gate for CI: what got slower between two runs, by more than a percentage.

:func:`slower` reads a comparison from :func:`~otelflow.analysis.compare.compare_runs`
and names each measure of B that exceeds A by more than ``pct`` percent: the run's wall
time, the critical path, and each task name's mean execution time (names in both runs).
``otelflow compare A B --fail-if-slower PCT`` exits with status 1 when it names any.

A measure whose baseline is below ``floor_s`` is not judged: a 2 µs task that took
3 µs is noise, not a regression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Slowdown", "slower"]


@dataclass(frozen=True)
class Slowdown:
    """One measure that got slower: its label, A and B in seconds, and B / A."""

    what: str
    a_s: float
    b_s: float

    @property
    def ratio(self) -> float:
        """B / A."""
        return self.b_s / self.a_s

    def __str__(self) -> str:
        from otelflow.analysis.report import format_duration

        pct = (self.ratio - 1) * 100
        return f"{self.what}: {format_duration(self.a_s)} → {format_duration(self.b_s)} (+{pct:.1f}%)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"what": self.what, "a_s": self.a_s, "b_s": self.b_s, "ratio": self.ratio}


def slower(cmp: dict[str, Any], pct: float, *, floor_s: float = 1e-3) -> list[Slowdown]:
    """The measures of B slower than A by more than ``pct`` percent, worst first.

    Args:
        cmp: A comparison dict from :func:`~otelflow.analysis.compare.compare_runs`.
        pct: The allowed slowdown in percent (``20`` allows B up to 1.2 × A).
        floor_s: Measures whose baseline is below this many seconds are not judged.

    Returns:
        One :class:`Slowdown` per measure over the limit, by ratio, largest first.

    Raises:
        ValueError: ``pct`` is negative.
    """
    if pct < 0:
        raise ValueError(f"--fail-if-slower takes a percentage ≥ 0, not {pct:g}.")
    limit = 1 + pct / 100
    found: list[Slowdown] = []

    def judge(what: str, row: dict[str, Any]) -> None:
        a, b = row.get("a"), row.get("b")
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a >= floor_s and b > a * limit:
            found.append(Slowdown(what, float(a), float(b)))

    judge("wall time", cmp["wall_s"])
    judge("critical path", cmp["critical_path_s"])
    for name, row in cmp["by_task_name"].items():
        judge(f"task {name!r} mean execution", row["mean_s"])
    found.sort(key=lambda s: -s.ratio)
    return found
