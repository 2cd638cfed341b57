"""Every PromQL query of the shipped Grafana dashboards works against real otelflow data.

A real Prometheus (``promtools.PrometheusServer``) scrapes otelflow's Prometheus endpoint
while a small workload runs in this process: two workflows, decorated tasks that succeed
and one that fails, and engine-reported tasks (submitted, queued, canceled, with CPU time
and peak RSS as a process pool reports them). Then each dashboard query, with Grafana's
variables filled in as "All", must parse and return data. Only GPU queries may come back
empty, and only where there is no GPU.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import prometheus_client
import pytest

import otelflow
from otelflow.integrations import instrument

try:
    from . import promtools
except ImportError:  # tests/integration is not a package: imported by rootdir path
    import promtools

#: Window the tests put in place of $__rate_interval / $__interval (the whole run fits).
RATE_WINDOW = "1m"
ROUNDS = 3
WORKFLOWS = ("wf-a", "wf-b")
#: Lifecycle transitions in one run_round(): 4 extract + 4 transform + 1 flaky (fails),
#: 3 engine tasks of which 2 complete and 1 is canceled while queued, 2 thread-pool tasks.
PER_RUN = {
    "created": 14,
    "resolved": 14,
    "submitted": 5,
    "queued": 3,
    "started": 13,
    "completed": 12,
    "failed": 1,
    "canceled": 1,
}
RUNS = ROUNDS * len(WORKFLOWS)
TOTALS = {state: n * RUNS for state, n in PER_RUN.items()}
GPU_METRIC_PREFIX = "otelflow_gpu_"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], promtools.PrometheusServer]]:
    """Start real Prometheus servers scraping a loopback port; all are stopped afterwards."""
    binary = promtools.require_tool(
        promtools.find_prometheus(),
        "Prometheus server (/usr/bin/prometheus)",
        "bash .ci/install-tools  (or: apt-get install -y --no-install-recommends prometheus)",
    )
    servers: list[promtools.PrometheusServer] = []

    def start(port: int) -> promtools.PrometheusServer:
        server = promtools.PrometheusServer(binary, tmp_path / f"prometheus-{len(servers)}", [port])
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


# -- the harness on its own -------------------------------------------------------------------


def test_harness_scrapes_a_real_endpoint_and_stops_by_pid(
    prometheus: Callable[[int], promtools.PrometheusServer],
) -> None:
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter("harness_events", "Events.", ["kind"], registry=registry)
    counter.labels(kind="a").inc(3)
    port = promtools.free_port()
    httpd, thread = prometheus_client.start_http_server(port, addr=promtools.LOOPBACK, registry=registry)
    try:
        prom = prometheus(port)
        result = prom.wait_for('harness_events_total{kind="a"}', lambda r: promtools.sample_values(r) == [3.0])
        assert result[0]["metric"]["job"] == prom.job
        counter.labels(kind="a").inc(2)
        prom.wait_for('harness_events_total{kind="a"}', lambda r: promtools.sample_values(r) == [5.0])
        assert prom.query(f'increase(harness_events_total{{kind="a"}}[{RATE_WINDOW}])')
        assert [t["health"] for t in prom.targets_health()] == ["up"]

        status, payload = prom.query_raw("sum(rate(harness_events_total[")
        assert status == 400
        assert payload["errorType"] == "bad_data"
        with pytest.raises(promtools.PromQueryError):
            prom.query("histogram_quantile(0.9, harness_events_total[1m])")
        assert prom.query("absent_metric_xyz") == []

        process = prom.process
        assert process is not None
        prom.stop()
        assert process.returncode is not None
        assert prom.process is None
        prom.stop()  # a second stop is a no-op
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_substitute_fills_grafana_variables() -> None:
    expr = 'sum(rate(m{a=~"$workflow", b=~"${task:regex}", c=~"[[node]]"}[$__rate_interval])) offset $__range'
    assert promtools.substitute(expr) == 'sum(rate(m{a=~".*", b=~".*", c=~".*"}[1m])) offset 1h'
    assert promtools.grafana_variables(expr) == ["workflow", "task", "node", "__rate_interval", "__range"]


# -- the workload -----------------------------------------------------------------------------


@otelflow.task
def extract(i: int) -> int:
    time.sleep(0.01)
    return i


@otelflow.task
def transform(x: int) -> int:
    time.sleep(0.02)
    return 2 * x


@otelflow.task
def flaky(x: int) -> int:
    raise RuntimeError(f"flaky failed on {x}")


def crunch(n: int) -> int:
    """CPU work in a thread-pool worker: its CPU time is measured in that thread."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def run_round(workflow: str, engine: otelflow.TaskTracker, pool: ThreadPoolExecutor) -> None:
    """One workflow run; see PER_RUN."""
    with otelflow.workflow_scope(workflow), otelflow.block("b"):
        for fut in [pool.submit(crunch, 200_000) for _ in range(2)]:
            fut.result(timeout=60)
        for i in range(4):
            transform(extract(i))
        with pytest.raises(RuntimeError):
            flaky(0)
        # What an engine with a process pool reports: queueing, peak RSS. (No CPU time:
        # the task-CPU panel's data must come from the thread-pool tasks below.)
        for _ in range(2):
            tid = engine.created(None, "pooled")
            engine.submitted(tid)
            engine.queued(tid)
            engine.started(tid)
            time.sleep(0.01)
            engine.completed(tid, peak_rss_bytes=48 * 2**20)
        tid = engine.created(None, "pooled")
        engine.submitted(tid)
        engine.queued(tid)
        engine.canceled(tid, reason="test")


def write_to_disk(path: Path) -> None:
    """Some real disk writes, so the node disk I/O counter moves."""
    with path.open("wb") as f:
        f.write(os.urandom(1 << 20))
        f.flush()
        os.fsync(f.fileno())


def gpu_present(prom: promtools.PrometheusServer) -> bool:
    return bool(prom.query("otelflow_gpu_utilization")) or shutil.which("nvidia-smi") is not None


def fallback_free_parts(expr: str) -> list[str]:
    """X of every ``X or vector(0)`` and ``X or Y * 0`` inside ``expr``: a zero fallback
    must not be the only reason a query returns data."""
    parser = promtools.promql()
    parts: list[str] = []

    def is_zero_fallback(node: object) -> bool:
        while isinstance(node, parser.ParenExpr):
            node = node.expr
        if isinstance(node, parser.Call):
            return node.func.name == "vector"
        return (
            isinstance(node, parser.BinaryExpr)
            and str(node.op) == "*"
            and isinstance(node.rhs, parser.NumberLiteral)
            and node.rhs.val == 0
        )

    def visit(node: object) -> None:
        if isinstance(node, parser.BinaryExpr) and str(node.op) == "or" and is_zero_fallback(node.rhs):
            parts.append(str(node.lhs))

    parser.walk(parser.parse(expr), visit)
    return parts


def check_result(prom: promtools.PrometheusServer, expr: str, allow_empty: bool) -> str | None:
    """Why ``expr`` fails the dashboard contract, or None if it is fine."""
    try:
        result = prom.query(expr)
    except promtools.PromQueryError as error:
        return str(error)
    if not result:
        return None if allow_empty else "returned no data"
    if not any(math.isfinite(v) for v in promtools.sample_values(result)):
        return f"returned only NaN/Inf: {result[:3]}"
    return None


def test_every_dashboard_query_returns_data(
    tmp_path: Path, prometheus: Callable[[int], promtools.PrometheusServer]
) -> None:
    promtools.promql()  # skip/fail early if the parser is missing
    port = promtools.free_port()
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path / "runs"),
        prometheus_port=port,
        resource_poll_interval=0.5,
        # Only the Prometheus endpoint: nothing from this machine's OTEL_* environment.
        environ={"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
    )
    pool = instrument(ThreadPoolExecutor(2))
    try:
        prom = prometheus(port)
        engine = otelflow.tracker(backend="pool")
        for round_ in range(ROUNDS):
            for workflow in WORKFLOWS:
                run_round(workflow, engine, pool)
            write_to_disk(tmp_path / f"io-{round_}.bin")
            # Later rounds must land in later scrapes, so rate() sees them as increases: wait
            # until Prometheus has scraped this round's total (not a sleep a stall outlasts).
            done = float(PER_RUN["completed"] * len(WORKFLOWS) * (round_ + 1))
            prom.wait_for(
                "sum(otelflow_tasks_completed_total)", lambda r, done=done: promtools.sample_values(r) == [done], 30
            )
        for needed in (
            "otelflow_node_cpu_utilization",
            "otelflow_node_disk_io_bytes_total",
            "otelflow_node_network_io_bytes_total",
            "otelflow_process_cpu_utilization",
        ):
            prom.wait_for(needed, timeout=30)
        # A few more scrapes of the final values: the checks are polled until they hold (a
        # query that never returns data still fails, after the deadline).
        deadline = time.monotonic() + 60
        while True:
            problems = check_dashboards(prom) + check_headline_numbers(prom) + check_thread_cpu(prom)
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        assert not problems, "\n".join(problems)
    finally:
        pool.shutdown()
        tel.stop(timeout=10)


def check_thread_cpu(prom: promtools.PrometheusServer) -> list[str]:
    """The resources dashboard's task-CPU query has data from the thread-pool tasks (the only
    tasks here that report CPU time besides the inline @otelflow.task ones)."""
    name = "otelflow-resources.json"
    panels = {p.get("title"): p for p in promtools.iter_panels(promtools.load_dashboards()[name]["panels"])}
    panel = panels.get("Task CPU time p95 by task")
    if panel is None:
        return [f"{name}: panel 'Task CPU time p95 by task' not found (rename it here too)"]
    expr = promtools.substitute(panel["targets"][0]["expr"], {"__rate_interval": RATE_WINDOW})
    series = {r["metric"].get("task_name"): float(r["value"][1]) for r in prom.query(expr)}
    value = series.get("crunch")
    if value is None or not (math.isfinite(value) and value > 0):
        return [f"{name}: task CPU p95 of the thread-pool task 'crunch' is {value!r}: {expr} -> {series}"]
    if "pooled" in series:
        return [f"{name}: 'pooled' reported no CPU time, yet has a CPU series: {series}"]
    return []


def check_dashboards(prom: promtools.PrometheusServer) -> list[str]:
    gpu = gpu_present(prom)
    ranges = {"__rate_interval": RATE_WINDOW, "__interval": RATE_WINDOW, "__range": "1h"}
    problems: list[str] = []
    checked = 0
    for name, dashboard in promtools.load_dashboards().items():
        queries: list[tuple[promtools.DashboardQuery, str]] = []
        for query in promtools.panel_queries(name, dashboard):
            queries.append((query, promtools.substitute(query.expr, ranges)))
        for query, label in promtools.variable_queries(name, dashboard):
            # Grafana's label_values(selector, label): the label's values among the series.
            queries.append((query, f"count by ({label}) ({promtools.substitute(query.expr, ranges)})"))
        for query, expr in queries:
            checked += 1
            gpu_only = not gpu and any(
                (metric or "").startswith(GPU_METRIC_PREFIX) for metric in promtools.metric_names(expr)
            )
            for candidate in [expr, *fallback_free_parts(expr)]:
                why = check_result(prom, candidate, allow_empty=gpu_only)
                if why:
                    shown = "" if candidate == expr else f" (without its 'or vector(0)': {candidate})"
                    problems.append(f"{query}{shown}: {why}")
    assert checked > 30, f"only {checked} dashboard queries found"
    return problems


def check_headline_numbers(prom: promtools.PrometheusServer) -> list[str]:
    """The overview panels show exactly what the workload did."""
    t = TOTALS
    expected = {
        "Tasks created": {"A": t["created"]},
        "Tasks completed": {"A": t["completed"]},
        "Tasks failed": {"A": t["failed"]},
        "Failure rate": {"A": t["failed"] / (t["completed"] + t["failed"] + t["canceled"])},
    }
    name = "otelflow-workflow.json"
    panels = {p.get("title"): p for p in promtools.iter_panels(promtools.load_dashboards()[name]["panels"])}
    lifecycle = panels.get("Tasks by lifecycle state")
    if lifecycle is not None:
        expected["Tasks by lifecycle state"] = {
            target["refId"]: t[target["legendFormat"]] for target in lifecycle["targets"]
        }
    problems = []
    for title, by_ref in expected.items():
        panel = panels.get(title)
        if panel is None:
            problems.append(f"{name}: panel {title!r} not found (rename it here too)")
            continue
        for target in panel["targets"]:
            if target["refId"] not in by_ref:
                continue
            expr = promtools.substitute(target["expr"], {"__range": "1h"})
            values = promtools.sample_values(prom.query(expr))
            want = float(by_ref[target["refId"]])
            if len(values) != 1 or not math.isclose(values[0], want, rel_tol=1e-9):
                problems.append(f"{name}: {title!r} {target['refId']}: got {values}, expected [{want}]: {expr}")
    return problems
