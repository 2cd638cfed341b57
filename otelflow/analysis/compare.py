"""Compare two runs: wall time, task counts, timings, critical path, per task name.

Every delta is **B − A** ("how did B change from A"), with ``ratio`` = B / A. Workflows
are matched by name (their ids differ between runs), tasks by task name.
"""

from __future__ import annotations

from typing import Any

from otelflow.analysis._tables import STATES
from otelflow.analysis.reader import Run
from otelflow.analysis.report import build_report, format_duration

__all__ = ["compare_runs", "format_comparison"]

_TIMINGS = (
    ("duration_s", "execution"),
    ("dependency_wait_s", "dependency wait"),
    ("dispatch_wait_s", "dispatch wait"),
    ("queue_wait_s", "queue wait"),
    ("scheduling_wait_s", "scheduling wait"),
)
_STATS = ("mean", "p50", "p95", "max", "total")


def _row(a: float | None, b: float | None) -> dict[str, float | None]:
    delta = b - a if a is not None and b is not None else None
    ratio = b / a if a and b is not None else None
    return {"a": a, "b": b, "delta": delta, "ratio": ratio}


def _by_workflow_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for w in report["workflows"].values():
        name = w.get("name") or "?"
        agg = out.setdefault(name, {"count": 0, "wall": [], "tasks": 0, "failed": 0, "execution_s": 0.0})
        agg["count"] += 1
        if w.get("duration_s") is not None:
            agg["wall"].append(w["duration_s"])
        agg["tasks"] += w["tasks"]["total"]
        agg["failed"] += w["tasks"]["failed"]
        agg["execution_s"] += w.get("execution_s") or 0.0
    for agg in out.values():
        wall = agg.pop("wall")
        agg["mean_wall_s"] = sum(wall) / len(wall) if wall else None
    return out


def compare_runs(a: Run | dict[str, Any], b: Run | dict[str, Any]) -> dict[str, Any]:
    """Compare run B against run A.

    Args:
        a: The baseline: a :class:`~otelflow.analysis.reader.Run` or its report
            (:func:`~otelflow.analysis.report.build_report`).
        b: The run to compare with it.

    Returns:
        A JSON-ready dict. Numeric comparisons are rows ``{"a", "b", "delta", "ratio"}``
        (delta = B − A, None when either side is missing). Keys: ``a``/``b`` (run ids and
        paths), ``wall_s``, ``tasks`` (by state), ``timings`` (per timing, per statistic),
        ``critical_path_s``, ``by_task_name``, ``by_workflow_name``, ``only_in_a``,
        ``only_in_b`` (task names), ``utilization`` (efficiency, peak and average
        concurrency, worker count, Σ execution).
    """
    ra = a if isinstance(a, dict) else build_report(a)
    rb = b if isinstance(b, dict) else build_report(b)
    tasks = {state: _row(ra["tasks"].get(state, 0), rb["tasks"].get(state, 0)) for state in ("total", *STATES)}
    timings = {
        key: {s: _row((ra.get(key) or {}).get(s), (rb.get(key) or {}).get(s)) for s in _STATS} for key, _ in _TIMINGS
    }
    cpa, cpb = ra.get("critical_path"), rb.get("critical_path")
    names_a, names_b = ra["by_task_name"], rb["by_task_name"]
    by_name: dict[str, Any] = {}
    for name in sorted(set(names_a) | set(names_b)):
        na, nb = names_a.get(name), names_b.get(name)

        def get(n: dict[str, Any] | None, *path: str) -> Any:
            if n is None:
                return None
            v: Any = n
            for p in path:
                v = v.get(p) if isinstance(v, dict) else None  # an older report lacks newer keys
            return v

        by_name[name] = {
            "count": _row(get(na, "tasks", "total"), get(nb, "tasks", "total")),
            "failed": _row(get(na, "tasks", "failed"), get(nb, "tasks", "failed")),
            "mean_s": _row(get(na, "duration_s", "mean"), get(nb, "duration_s", "mean")),
            "p95_s": _row(get(na, "duration_s", "p95"), get(nb, "duration_s", "p95")),
            "total_s": _row(get(na, "duration_s", "total"), get(nb, "duration_s", "total")),
            "dependency_wait_mean_s": _row(get(na, "dependency_wait_s", "mean"), get(nb, "dependency_wait_s", "mean")),
            "dispatch_wait_mean_s": _row(get(na, "dispatch_wait_s", "mean"), get(nb, "dispatch_wait_s", "mean")),
            "queue_wait_mean_s": _row(get(na, "queue_wait_s", "mean"), get(nb, "queue_wait_s", "mean")),
            "scheduling_wait_mean_s": _row(get(na, "scheduling_wait_s", "mean"), get(nb, "scheduling_wait_s", "mean")),
        }
    wa, wb = _by_workflow_name(ra), _by_workflow_name(rb)
    by_wf: dict[str, Any] = {}
    for name in sorted(set(wa) | set(wb)):
        x, y = wa.get(name, {}), wb.get(name, {})
        by_wf[name] = {k: _row(x.get(k), y.get(k)) for k in ("count", "tasks", "failed", "mean_wall_s", "execution_s")}
    return {
        "a": {"run_id": ra["run"]["run_id"], "path": ra["run"]["path"]},
        "b": {"run_id": rb["run"]["run_id"], "path": rb["run"]["path"]},
        "wall_s": _row(ra["run"]["duration_s"], rb["run"]["duration_s"]),
        "tasks": tasks,
        "timings": timings,
        "critical_path_s": _row(cpa["length_s"] if cpa else None, cpb["length_s"] if cpb else None),
        "by_task_name": by_name,
        "by_workflow_name": by_wf,
        "only_in_a": sorted(set(names_a) - set(names_b)),
        "only_in_b": sorted(set(names_b) - set(names_a)),
        "utilization": _utilization_rows(ra, rb),
    }


def _utilization_rows(ra: dict[str, Any], rb: dict[str, Any]) -> dict[str, Any]:
    ua, ub = ra.get("utilization") or {}, rb.get("utilization") or {}
    keys = ("efficiency", "peak_concurrency", "avg_concurrency", "worker_count", "busy_s")
    return {k: _row(ua.get(k), ub.get(k)) for k in keys}


def _pct(row: dict[str, Any]) -> str:
    a, d = row["a"], row["delta"]
    if d is None:
        return "" if row["a"] is not None and row["b"] is not None else "new" if row["a"] is None else "gone"
    if not a:
        return "" if not d else "n/a"
    return f"{d / a * 100:+.1f}%"


def _num(v: Any) -> str:
    return "-" if v is None else str(v)


def _dur_delta(d: float | None) -> str:
    if d is None:
        return "-"
    sign = "+" if d > 0 else "-" if d < 0 else "±"
    return sign + format_duration(abs(d))


def _int_delta(d: Any) -> str:
    return "-" if d is None else f"{d:+d}" if d else "0"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = [
        "  " + "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip()
        for r in (headers, *rows)
    ]
    return fmt


def format_comparison(cmp: dict[str, Any], *, max_rows: int = 30) -> str:
    """Render a comparison from :func:`compare_runs` as terminal text."""
    out = [
        f"A: {cmp['a']['run_id']}  ({cmp['a']['path']})",
        f"B: {cmp['b']['run_id']}  ({cmp['b']['path']})",
        "Deltas are B − A.",
        "",
    ]
    rows: list[list[str]] = []
    w = cmp["wall_s"]
    rows.append(["wall time", format_duration(w["a"]), format_duration(w["b"]), _dur_delta(w["delta"]), _pct(w)])
    cp = cmp["critical_path_s"]
    rows.append(
        ["critical path", format_duration(cp["a"]), format_duration(cp["b"]), _dur_delta(cp["delta"]), _pct(cp)]
    )
    for key, label in _TIMINGS:
        if key == "scheduling_wait_s":
            continue  # dispatch + queue wait, shown above it
        for s in ("mean", "p50", "p95", "max", "total"):
            r = cmp["timings"][key][s]
            rows.append(
                [f"{label} {s}", format_duration(r["a"]), format_duration(r["b"]), _dur_delta(r["delta"]), _pct(r)]
            )
    out += _table(["", "A", "B", "Δ", "Δ%"], rows)

    out.append("")
    out.append("Tasks:")
    rows = []
    for state, r in cmp["tasks"].items():
        if state != "total" and not r["a"] and not r["b"]:
            continue
        rows.append([state, _num(r["a"]), _num(r["b"]), _int_delta(r["delta"]), _pct(r)])
    out += _table(["", "A", "B", "Δ", "Δ%"], rows)

    names = cmp["by_task_name"]
    if names:
        out.append("")
        ranked = sorted(names.items(), key=lambda kv: -abs(kv[1]["total_s"]["delta"] or 0))
        more = f" (top {max_rows} of {len(names)} by |Δ total|)" if len(names) > max_rows else ""
        out.append(f"By task name{more}:")
        rows = []
        for name, n in ranked[:max_rows]:
            rows.append(
                [
                    name,
                    _num(n["count"]["a"]),
                    _num(n["count"]["b"]),
                    format_duration(n["mean_s"]["a"]),
                    format_duration(n["mean_s"]["b"]),
                    _dur_delta(n["mean_s"]["delta"]),
                    _pct(n["mean_s"]),
                    _dur_delta(n["total_s"]["delta"]),
                ]
            )
        out += _table(["name", "n A", "n B", "mean A", "mean B", "Δ mean", "Δ%", "Δ total"], rows)

    wfs = cmp["by_workflow_name"]
    if wfs:
        out.append("")
        out.append("By workflow name:")
        rows = []
        for name, n in list(wfs.items())[:max_rows]:
            rows.append(
                [
                    name,
                    _num(n["count"]["a"]),
                    _num(n["count"]["b"]),
                    format_duration(n["mean_wall_s"]["a"]),
                    format_duration(n["mean_wall_s"]["b"]),
                    _dur_delta(n["mean_wall_s"]["delta"]),
                    _pct(n["mean_wall_s"]),
                ]
            )
        out += _table(["name", "n A", "n B", "wall A", "wall B", "Δ wall", "Δ%"], rows)
    if cmp["only_in_a"]:
        out.append("")
        out.append("Only in A: " + ", ".join(cmp["only_in_a"]))
    if cmp["only_in_b"]:
        if not cmp["only_in_a"]:
            out.append("")
        out.append("Only in B: " + ", ".join(cmp["only_in_b"]))
    out += _format_utilization_rows(cmp.get("utilization"))
    return "\n".join(out) + "\n"


def _format_utilization_rows(u: dict[str, Any] | None) -> list[str]:
    if not u or (u["efficiency"]["a"] is None and u["efficiency"]["b"] is None):
        return []

    def pct(v: Any) -> str:
        return "-" if v is None else f"{v * 100:.1f}%"

    def num(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    e, p, a, w = u["efficiency"], u["peak_concurrency"], u["avg_concurrency"], u["worker_count"]
    rows = [
        ["efficiency", pct(e["a"]), pct(e["b"]), "-" if e["delta"] is None else f"{e['delta'] * 100:+.1f} pt"],
        ["workers", num(w["a"]), num(w["b"]), _int_delta(w["delta"])],
        ["peak concurrency", num(p["a"]), num(p["b"]), _int_delta(p["delta"])],
        ["avg concurrency", num(a["a"]), num(a["b"]), "-" if a["delta"] is None else f"{a['delta']:+.2f}"],
    ]
    return ["", "Utilization:", *_table(["", "A", "B", "Δ"], rows)]
