"""How durations are written for people (shared by the report, compare and utilization)."""

from __future__ import annotations

__all__ = ["format_duration"]


def format_duration(s: float | None) -> str:
    """Format seconds for humans: ``-``, ``0s``, ``850µs``, ``12.5ms``, ``3.250s``, ``2m03.5s``, ``1h02m``."""
    if s is None:
        return "-"
    if s == 0:
        return "0s"
    if s < 1e-3:
        return f"{s * 1e6:.0f}µs"
    if s < 1:
        return f"{s * 1e3:.1f}ms"
    if s < 60:
        return f"{s:.3f}s"
    if s < 3600:
        return f"{int(s // 60)}m{s % 60:04.1f}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
