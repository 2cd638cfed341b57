"""A run as one self-contained HTML Gantt: no network, zoom and pan, hover for a task's times.

The page holds its data as JSON and draws it on a ``<canvas>`` with a few lines of plain
JavaScript (no libraries, nothing fetched). Lanes are workers (``by="worker"``, tasks
that overlap on one worker get sub-lanes) or workflows. Each task is a light bar from
ready to started (scheduling wait) and a bar coloured by task name from started to its end;
failed tasks are outlined red. Wheel zooms around the pointer, drag pans, double-click
resets; hovering a bar shows its ids, times and waits.

Size is bounded: a run with more than ``max_bars`` tasks shows the ``max_bars`` longest
ones as bars, over a strip per lane of how many tasks ran in each of ``bins`` time bins
(darker = more), and says so in the header.
"""

from __future__ import annotations

import heapq
import html
import json
import os
from typing import Any

from otelflow.analysis._tables import TaskInfo
from otelflow.analysis.plots import timeline_lanes
from otelflow.analysis.reader import Run

__all__ = ["MAX_BARS", "write_html"]

MAX_BARS = 20_000
"""Default most task bars in one page (≈ 1.5 MB of HTML)."""

_PALETTE = [
    "#4C72B0", "#55A868", "#8172B2", "#CCB974", "#64B5CD", "#DD8452",
    "#937860", "#DA8BC3", "#8C8C8C", "#2A9D8F", "#E9C46A", "#6D597A",
]  # fmt: skip


def _group(t: TaskInfo, by: str) -> str | None:
    if by == "worker":
        return (t.worker or "unassigned") if t.started is not None else None
    return t.workflow_name or t.workflow_id or "(no workflow)"


def _payload(run: Run, by: str, max_bars: int, bins: int) -> dict[str, Any]:
    tasks = [t for t in run.tasks().values() if t.started is not None or by == "workflow"]
    total = len(tasks)
    t0: int | None = None
    t1: int | None = None
    for t in tasks:  # streamed: no list of a million times
        begin = t.ready if t.ready is not None else t.started
        if begin is not None and (t0 is None or begin < t0):
            t0 = begin
        for e in (t.ended, t.started):
            if e is not None and (t1 is None or e > t1):
                t1 = e
    t0 = t0 if t0 is not None else (run.start_time or 0)
    t1 = t1 if t1 is not None else t0
    if any(t.ended is None for t in tasks):  # still running at the end: draw them to the run's end
        t1 = max(t1, run.end_time or run.data.session_end or run.data.last_time or t1)
    t1 = max(t1, t0 + 1)
    shown = tasks
    if total > max_bars:
        shown = heapq.nlargest(max_bars, tasks, key=lambda t: t.execution_s or 0.0)
    groups, lane_of = timeline_lanes(shown, by=by)
    names: dict[str, int] = {}
    bars: list[list[Any]] = []

    def ms(ns: int) -> float:
        return round((ns - t0) / 1e6, 3)

    for t in shown:
        lane = lane_of.get(t.task_id)
        if lane is None:
            continue
        start = t.started if t.started is not None else t.ready
        if start is None:
            continue
        end = t.ended if t.ended is not None else t1
        ready = t.ready if t.ready is not None and t.ready <= start else start
        name = t.name or "task"
        ni = names.setdefault(name, len(names))
        execution, dependency, _dispatch, _queue, scheduling = t.timings()
        bars.append(
            [lane, ms(ready), ms(start), ms(max(start, end)), ni, t.state, t.task_id, dependency, scheduling, execution]
        )
    agg = None
    if total > max_bars:
        # Running-task counts per lane group and time bin, for every task (not only the shown ones).
        width = (t1 - t0) / bins
        rows: dict[str, list[int]] = {g: [0] * (bins + 1) for g, _ in groups}
        for t in tasks:
            g = _group(t, by)
            if g not in rows or t.started is None:
                continue
            end = t.ended if t.ended is not None else t1
            a = min(bins - 1, int((t.started - t0) / width))
            b = min(bins, max(a + 1, int((end - t0) / width) + 1))
            rows[g][a] += 1
            rows[g][b] -= 1
        agg_rows = {}
        for g, d in rows.items():
            run_sum, out = 0, []
            for v in d[:bins]:
                run_sum += v
                out.append(run_sum)
            agg_rows[g] = out
        agg = {"bins": bins, "rows": [agg_rows[g] for g, _ in groups]}
    return {
        "run_id": run.run_id,
        "service": run.service_name,
        "span_ms": ms(t1),
        "groups": [[g, n] for g, n in groups],
        "names": list(names),
        "colors": [_PALETTE[i % len(_PALETTE)] for i in range(len(names))],
        "bars": bars,
        "total": total,
        "shown": len(bars),
        "agg": agg,
    }


def write_html(
    run: Run, output: str | os.PathLike[str], *, by: str = "worker", max_bars: int = MAX_BARS, bins: int = 800
) -> dict[str, int]:
    """Write the run's Gantt as one self-contained HTML file.

    Args:
        run: The run.
        output: The ``.html`` file to write.
        by: Lanes per ``"worker"`` or per ``"workflow"``.
        max_bars: At most this many task bars (the longest); the rest are in the strips.
        bins: Time bins of the strips of a run with more than ``max_bars`` tasks.

    Returns:
        ``{"tasks", "bars", "lanes"}``.
    """
    data = _payload(run, by, max(1, max_bars), max(10, bins))
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    title = html.escape(f"otelflow — run {run.run_id}")
    page = _PAGE.replace("__TITLE__", title).replace("__DATA__", blob)
    with open(output, "w", encoding="utf-8") as f:
        f.write(page)
    lanes = sum(n for _, n in data["groups"])
    return {"tasks": data["total"], "bars": data["shown"], "lanes": lanes}


_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
 body{margin:0;font:13px system-ui,sans-serif;color:#222;background:#fff}
 header{padding:8px 12px;border-bottom:1px solid #ddd}
 header b{font-size:15px} header span{color:#666;margin-left:10px}
 #wrap{position:relative} canvas{display:block;cursor:grab}
 #tip{position:absolute;pointer-events:none;background:#fffffe;border:1px solid #999;padding:6px 8px;
      border-radius:4px;box-shadow:0 2px 6px #0003;white-space:pre;font:12px ui-monospace,monospace;display:none}
 #legend{padding:4px 12px;color:#444} #legend i{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
</style></head><body>
<header><b id="title"></b><span id="meta"></span></header>
<div id="legend"></div>
<div id="wrap"><canvas id="c"></canvas><div id="tip"></div></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const cv = document.getElementById("c"), ctx = cv.getContext("2d"), tip = document.getElementById("tip");
const LABEL = 160, ROW = 18, TOP = 24;
const lanes = []; // [label or "", group index]
D.groups.forEach((g, gi) => { for (let i = 0; i < g[1]; i++) lanes.push([i === 0 ? g[0] : "", gi]); });
const byLane = lanes.map(() => []);
D.bars.forEach(b => byLane[b[0]].push(b));
byLane.forEach(l => l.sort((a, b) => a[2] - b[2]));
let v0 = 0, v1 = Math.max(D.span_ms, 1e-3);
document.getElementById("title").textContent = "Run " + D.run_id;
document.getElementById("meta").textContent = D.service + " · " + D.total + " tasks" +
  (D.shown < D.total ? " · showing the " + D.shown + " longest as bars, all as density strips" : "") +
  " · wheel: zoom · drag: pan · double-click: reset";
document.getElementById("legend").innerHTML = D.names.slice(0, 24).map((n, i) =>
  '<i style="background:' + D.colors[i] + '"></i>' + n.replace(/[<&]/g, c => c === "<" ? "&lt;" : "&amp;")).join("") +
  '<i style="background:#D5DBE0"></i>waiting to start';
function size() {
  cv.width = Math.max(600, window.innerWidth);
  cv.height = TOP + ROW * Math.max(1, lanes.length) + ROW + (D.agg ? D.groups.length * 8 + 10 : 0);
}
function x(t) { return LABEL + (t - v0) / (v1 - v0) * (cv.width - LABEL - 10); }
function fmt(ms) { return ms >= 1000 ? (ms / 1000).toFixed(3) + " s" : ms.toFixed(3) + " ms"; }
function secs(s) { return s === null ? "-" : fmt(s * 1000); }
function draw() {
  ctx.clearRect(0, 0, cv.width, cv.height);
  ctx.font = "11px system-ui,sans-serif"; ctx.textBaseline = "middle";
  let drawn = 0;
  for (let li = 0; li < lanes.length; li++) {
    const y = TOP + li * ROW;
    if (lanes[li][1] % 2) { ctx.fillStyle = "#f6f7f9"; ctx.fillRect(0, y, cv.width, ROW); }
    ctx.fillStyle = "#333"; ctx.fillText(lanes[li][0].slice(0, 24), 4, y + ROW / 2);
    for (const b of byLane[li]) {
      if (b[3] < v0 || b[1] > v1) continue;
      const xr = x(b[1]), xs = x(b[2]), xe = Math.max(x(b[3]), xs + 1);
      if (xs > xr) { ctx.fillStyle = "#D5DBE0"; ctx.fillRect(xr, y + 5, xs - xr, ROW - 10); }
      ctx.fillStyle = D.colors[b[4]]; ctx.fillRect(xs, y + 2, xe - xs, ROW - 4);
      if (b[5] === "failed") {
        ctx.strokeStyle = "#C44E52"; ctx.lineWidth = 2; ctx.strokeRect(xs, y + 2, xe - xs, ROW - 4);
      }
      drawn++;
    }
  }
  if (D.agg) {
    const y0 = TOP + lanes.length * ROW + 6, n = D.agg.bins, w = D.span_ms / n;
    let max = 1; D.agg.rows.forEach(r => r.forEach(c => { if (c > max) max = c; }));
    ctx.font = "9px system-ui,sans-serif";
    D.agg.rows.forEach((r, gi) => {
      ctx.fillStyle = "#555"; ctx.fillText(D.groups[gi][0].slice(0, 20) + " (all)", 4, y0 + gi * 8 + 4);
      for (let i = 0; i < n; i++) {
        if (!r[i]) continue;
        ctx.fillStyle = "rgba(76,114,176," + (0.15 + 0.85 * r[i] / max).toFixed(3) + ")";
        const a = x(i * w), b = x((i + 1) * w);
        if (b >= LABEL && a <= cv.width) ctx.fillRect(Math.max(a, LABEL), y0 + gi * 8, Math.max(1, b - a), 7);
      }
    });
  }
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, cv.width, TOP);
  ctx.strokeStyle = "#ccc"; ctx.fillStyle = "#555"; ctx.lineWidth = 1;
  for (let i = 0; i <= 8; i++) {
    const t = v0 + (v1 - v0) * i / 8, xx = x(t);
    ctx.beginPath(); ctx.moveTo(xx, TOP - 4); ctx.lineTo(xx, cv.height);
    ctx.globalAlpha = 0.25; ctx.stroke(); ctx.globalAlpha = 1;
    ctx.fillText(fmt(t), Math.min(xx, cv.width - 70), 10);
  }
  document.body.dataset.bars = String(drawn);
  document.body.dataset.rendered = "1";
}
function at(mx, my) {
  const li = Math.floor((my - TOP) / ROW);
  if (li < 0 || li >= lanes.length || mx < LABEL) return null;
  const t = v0 + (mx - LABEL) / (cv.width - LABEL - 10) * (v1 - v0), l = byLane[li];
  let lo = 0, hi = l.length - 1, k = -1;
  while (lo <= hi) { const m = (lo + hi) >> 1; if (l[m][1] <= t) { k = m; lo = m + 1; } else hi = m - 1; }
  for (let i = k; i >= 0 && i > k - 50; i--) if (l[i][1] <= t && l[i][3] >= t) return l[i];
  return null;
}
let drag = null;
cv.addEventListener("mousedown", e => { drag = [e.clientX, v0, v1]; cv.style.cursor = "grabbing"; });
window.addEventListener("mouseup", () => { drag = null; cv.style.cursor = "grab"; });
cv.addEventListener("mousemove", e => {
  const r = cv.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
  if (drag) {
    const dt = (e.clientX - drag[0]) / (cv.width - LABEL - 10) * (drag[2] - drag[1]);
    v0 = drag[1] - dt; v1 = drag[2] - dt; draw(); return;
  }
  const b = at(mx, my);
  if (!b) { tip.style.display = "none"; return; }
  tip.textContent = b[6] + "  " + D.names[b[4]] + "  [" + b[5] + "]\n" +
    "ready    " + fmt(b[1]) + "\nstarted  " + fmt(b[2]) + "\nended    " + fmt(b[3]) +
    "\ndependency wait  " + secs(b[7]) + "\nscheduling wait  " + secs(b[8]) + "\nexecution        " + secs(b[9]);
  tip.style.display = "block";
  tip.style.left = Math.min(mx + 14, cv.width - 260) + "px"; tip.style.top = (my + 14) + "px";
});
cv.addEventListener("wheel", e => {
  e.preventDefault();
  const r = cv.getBoundingClientRect(), mx = e.clientX - r.left;
  const t = v0 + Math.max(0, mx - LABEL) / (cv.width - LABEL - 10) * (v1 - v0);
  const k = e.deltaY < 0 ? 0.8 : 1.25;
  v0 = t - (t - v0) * k; v1 = t + (v1 - t) * k; draw();
}, {passive: false});
cv.addEventListener("dblclick", () => { v0 = 0; v1 = Math.max(D.span_ms, 1e-3); draw(); });
window.addEventListener("resize", () => { size(); draw(); });
size(); draw();
</script></body></html>
"""
