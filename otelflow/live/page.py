"""The live page: one self-contained HTML document (inline CSS and JS, no build, no network).

It opens ``EventSource("events")`` and keeps, from the event stream alone: task counts by
state, running/queued over time, a Gantt of tasks (coloured by task name) under their
workflow and block bars, the latest failures and log lines, and the node's CPU/memory.
The browser's EventSource resends ``Last-Event-ID`` itself when it reconnects.
"""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{TITLE}}</title>
<style>
 body{font:13px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#222}
 header{display:flex;gap:1em;align-items:baseline;padding:.6em 1em;background:#1f2937;color:#fff}
 header h1{font-size:15px;margin:0} #status{font-weight:600}
 main{display:grid;grid-template-columns:1fr 1fr;gap:.8em;padding:.8em}
 section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5em .8em;min-width:0}
 section h2{font-size:13px;margin:.2em 0 .5em;color:#555} .wide{grid-column:1/3}
 .counters{display:flex;gap:.6em;flex-wrap:wrap} .counter{padding:.3em .7em;border-radius:4px;background:#eef}
 .counter b{display:block;font-size:20px} .failed b{color:#b91c1c} .completed b{color:#15803d}
 .running b{color:#1d4ed8} ul{margin:0;padding-left:1.1em;max-height:16em;overflow:auto}
 li{white-space:nowrap;overflow:hidden;text-overflow:ellipsis} .lvl-ERROR,.lvl-CRITICAL{color:#b91c1c}
 .lvl-WARNING{color:#b45309} svg{width:100%;display:block} .muted{color:#777}
</style></head>
<body>
<header><h1>{{TITLE}}</h1><span id="status">connecting</span>
 <span class="muted"><span id="nevents">0</span> events, <span id="gaps">0</span> missed</span></header>
<main>
<section class="wide"><h2>Tasks by state</h2><div class="counters">
 <div class="counter"><b id="n-created">0</b>created</div>
 <div class="counter"><b id="n-waiting">0</b>waiting</div>
 <div class="counter"><b id="n-queued">0</b>queued</div>
 <div class="counter running"><b id="n-running">0</b>running</div>
 <div class="counter completed"><b id="n-completed">0</b>completed</div>
 <div class="counter failed"><b id="n-failed">0</b>failed</div>
 <div class="counter"><b id="n-canceled">0</b>canceled</div>
</div></section>
<section><h2>Running (blue) and queued (orange) over time</h2><svg id="series" viewBox="0 0 600 120"
 preserveAspectRatio="none" height="120"></svg></section>
<section><h2>Node</h2><div>CPU <b id="cpu">–</b> · memory <b id="mem">–</b></div>
 <svg id="res" viewBox="0 0 600 80" preserveAspectRatio="none" height="80"></svg></section>
<section class="wide"><h2>Gantt (latest <span id="shown">0</span> tasks; workflows and blocks on top)</h2>
 <svg id="gantt" height="60"></svg></section>
<section><h2>Recent failures</h2><ul id="failures"></ul></section>
<section><h2>Recent log lines</h2><ul id="logs"></ul></section>
</main>
<script>
"use strict";
const MAX_BARS = 300, MAX_POINTS = 600, MAX_LIST = 100;
const counts = {created: 0, waiting: 0, queued: 0, running: 0, completed: 0, failed: 0, canceled: 0};
const tasks = new Map(), scopes = new Map(), series = [], res = [];
let t0 = null, tLast = null, nEvents = 0, gaps = 0, dirty = true;
const $ = (id) => document.getElementById(id);
const ms = (ns) => Number(ns) / 1e6;
// names come from the run (user code): escape before they go into markup
const esc = (v) => String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
function hue(name) { let h = 0; for (const c of String(name)) h = (h * 31 + c.charCodeAt(0)) >>> 0; return h % 360; }
function setState(t, s) { if (t.state) counts[t.state]--; t.state = s; counts[s]++; }
function task(ev) {
  let t = tasks.get(ev.task_id);
  if (!t) { t = {id: ev.task_id, name: ev.task_name || "task", state: null, start: null, end: null,
                 wf: ev.workflow_id, block: ev.block_id}; tasks.set(ev.task_id, t); }
  return t;
}
function addItem(list, text, cls) {
  const li = document.createElement("li"); li.textContent = text; if (cls) li.className = cls;
  list.prepend(li); while (list.children.length > MAX_LIST) list.lastChild.remove();
}
const TERMINAL = {TaskCompleted: "completed", TaskFailed: "failed", TaskCanceled: "canceled"};
function handle(ev) {
  nEvents++;
  const at = ev.event_time ? ms(ev.event_time) : null;
  if (at !== null) { if (t0 === null || at < t0) t0 = at; if (tLast === null || at > tLast) tLast = at; }
  switch (ev.type) {
    case "TaskCreated": { const t = task(ev); if (!t.state) { counts.created++; setState(t, "waiting"); } break; }
    case "TaskQueued": { const t = task(ev); if (t.state === "waiting") setState(t, "queued"); break; }
    case "TaskStarted": { const t = task(ev); t.start = at; if (!(t.state in {completed:1, failed:1, canceled:1}))
      setState(t, "running"); break; }
    case "TaskCompleted": case "TaskFailed": case "TaskCanceled": {
      const t = task(ev); if (!t.state) counts.created++; setState(t, TERMINAL[ev.type]); t.end = at;
      if (t.start === null) t.start = at;
      if (ev.type === "TaskFailed") addItem($("failures"),
        `${t.name} ${t.id}: ${ev.error_type}${ev.error_message ? ": " + ev.error_message : ""}`);
      break; }
    case "WorkflowStarted": case "BlockStarted":
      scopes.set(ev.workflow_id && ev.type === "WorkflowStarted" ? ev.workflow_id : ev.block_id,
        {kind: ev.type === "WorkflowStarted" ? "workflow" : "block",
         name: ev.workflow_name || ev.block_name || "", start: at, end: null}); break;
    case "WorkflowEnded": case "BlockEnded": {
      const s = scopes.get(ev.type === "WorkflowEnded" ? ev.workflow_id : ev.block_id); if (s) s.end = at; break; }
    case "LogRecord": addItem($("logs"), `${ev.level} ${ev.logger}: ${ev.message}`, "lvl-" + ev.level); break;
    case "ResourceUpdate": if (ev.scope === "node") {
      $("cpu").textContent = ev.cpu_utilization == null ? "–" : (100 * ev.cpu_utilization).toFixed(0) + " %";
      $("mem").textContent = ev.memory_utilization == null ? "–" : (100 * ev.memory_utilization).toFixed(0) + " %";
      res.push([at, ev.cpu_utilization || 0, ev.memory_utilization || 0]); if (res.length > MAX_POINTS) res.shift();
    } break;
    case "SessionEnded": $("status").textContent = "run ended"; break;
  }
  dirty = true;
}
function poly(points, color) {
  return `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${points.join(" ")}"/>`;
}
function draw() {
  for (const k in counts) $("n-" + k).textContent = counts[k];
  $("nevents").textContent = nEvents; $("gaps").textContent = gaps;
  if (!dirty || t0 === null) return; dirty = false;
  series.push([tLast, counts.running, counts.queued]); if (series.length > MAX_POINTS) series.shift();
  const span = Math.max(1, tLast - t0), x = (t) => (600 * (t - t0) / span).toFixed(1);
  const top = Math.max(1, ...series.map((p) => Math.max(p[1], p[2])));
  $("series").innerHTML = poly(series.map((p) => `${x(p[0])},${(118 - 110 * p[1] / top).toFixed(1)}`), "#1d4ed8")
    + poly(series.map((p) => `${x(p[0])},${(118 - 110 * p[2] / top).toFixed(1)}`), "#d97706");
  $("res").innerHTML = poly(res.map((p) => `${x(p[0])},${(78 - 76 * p[1]).toFixed(1)}`), "#7c3aed")
    + poly(res.map((p) => `${x(p[0])},${(78 - 76 * p[2]).toFixed(1)}`), "#059669");
  const list = [...tasks.values()].filter((t) => t.start !== null).slice(-MAX_BARS);
  const sc = [...scopes.values()], rowH = 12, scH = 8, W = 1000;
  const gx = (t) => (W * (t - t0) / span).toFixed(1);
  let out = "";
  sc.forEach((s, i) => { const e = s.end ?? tLast;
    out += `<rect class="scope ${s.kind}" x="${gx(s.start)}" y="${i * scH}"`
      + ` width="${Math.max(1, gx(e) - gx(s.start))}" height="${scH - 2}"`
      + ` fill="${s.kind === "workflow" ? "#374151" : "#9ca3af"}"><title>${s.kind} ${esc(s.name)}</title></rect>`; });
  const y0 = sc.length * scH + 4, lanes = [];
  list.sort((a, b) => a.start - b.start);
  list.forEach((t) => { const e = t.end ?? tLast;
    // pack bars into lanes: a task takes the first lane free at its start
    let i = lanes.findIndex((end) => end < t.start); if (i < 0) { i = lanes.length; lanes.push(e); } else lanes[i] = e;
    out += `<rect class="bar ${t.state}" data-task="${esc(t.id)}" x="${gx(t.start)}" y="${y0 + i * rowH}"`
      + ` width="${Math.max(1, gx(e) - gx(t.start))}" height="${rowH - 1}"`
      + ` fill="hsl(${hue(t.name)},65%,${t.state === "failed" ? 35 : 55}%)">`
      + `<title>${esc(t.name)} ${esc(t.id)} ${t.state}</title></rect>`; });
  const g = $("gantt"); const h = y0 + lanes.length * rowH + 4;
  g.setAttribute("viewBox", `0 0 ${W} ${h}`); g.setAttribute("height", Math.min(600, h));
  g.setAttribute("preserveAspectRatio", "none");
  g.innerHTML = out; $("shown").textContent = list.length;
}
setInterval(draw, 250);
const es = new EventSource("events");
es.onopen = () => { if ($("status").textContent !== "run ended") $("status").textContent = "live"; };
es.onmessage = (m) => { try { handle(JSON.parse(m.data)); } catch (e) { console.error(e); } };
es.addEventListener("gap", (m) => { gaps += JSON.parse(m.data).missed; });
es.addEventListener("end", () => { es.close(); $("status").textContent = "run ended"; draw(); });
es.onerror = () => { if (es.readyState !== 2) $("status").textContent = "reconnecting"; };
</script></body></html>
"""
