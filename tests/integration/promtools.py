"""A real Prometheus server on loopback, for tests that check PromQL against real data.

:class:`PrometheusServer` runs the ``prometheus`` binary (Debian's ``/usr/bin/prometheus``,
installed by ``.ci/install-tools``) on ``127.0.0.1`` with an ephemeral port, a temporary
storage directory and a generated scrape configuration that scrapes given loopback ports
every second. It is stopped by PID: terminate, wait, kill.

Also here: :func:`require_tool`, which skips a test when a tool is missing locally but
fails it under CI (``CI`` set), so a broken install step cannot pass as green; and the
helpers both deployment test modules use to read the shipped Grafana dashboards' queries.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = REPO / "grafana" / "dashboards"
INSTALL_TOOLS = "bash .ci/install-tools"
LOOPBACK = "127.0.0.1"

# Never send loopback requests through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def missing_tool(what: str, install: str = INSTALL_TOOLS) -> NoReturn:
    """Skip (locally) or fail (under CI) because ``what`` is not installed."""
    message = f"{what} is not installed; run: {install}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_tool(path: str | os.PathLike[str] | None, what: str, install: str = INSTALL_TOOLS) -> str:
    """Return ``path`` as a string if it is an executable file, else skip/fail the test."""
    if path is None or not os.access(path, os.X_OK) or not Path(path).is_file():
        missing_tool(what, install)
    return os.fspath(path)


def require_module(name: str, pip_name: str) -> ModuleType:
    """Import ``name``, or skip (locally) / fail (under CI) naming the pip package."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing_tool(f"Python package {pip_name}", f"pip install {pip_name}  (in the test extra)")


def find_prometheus() -> str | None:
    """Path of the Prometheus server binary: ``$PROMETHEUS_BIN``, Debian's, or on PATH."""
    for candidate in (os.environ.get("PROMETHEUS_BIN"), "/usr/bin/prometheus", shutil.which("prometheus")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url`` (loopback only); return (status, body) for any HTTP status."""
    if urllib.parse.urlsplit(url).hostname != LOOPBACK:
        raise ValueError(f"refusing to request a non-loopback URL: {url}")
    try:
        with _opener.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class PromQueryError(AssertionError):
    """Prometheus rejected a query (bad syntax, bad types, timeout)."""


class PrometheusServer:
    """One Prometheus process scraping ``targets`` (loopback ports) every second.

    Use :meth:`start` and :meth:`stop` (from a fixture finalizer), or the object as a
    context manager. Storage and logs live in ``workdir``.
    """

    def __init__(
        self,
        binary: str,
        workdir: Path,
        targets: Iterable[int],
        *,
        scrape_interval: str = "1s",
        job: str = "otelflow",
    ) -> None:
        self.binary = binary
        self.workdir = Path(workdir)
        self.targets = [f"{LOOPBACK}:{port}" for port in targets]
        self.scrape_interval = scrape_interval
        self.job = job
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "prometheus.log"

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("Prometheus is not started")
        return f"http://{LOOPBACK}:{self.port}"

    def write_config(self) -> Path:
        """Write the scrape configuration (JSON, which is YAML) and return its path."""
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [{"job_name": self.job, "static_configs": [{"targets": self.targets}]}],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        """Start the server and wait until ``/-/ready`` answers 200.

        A port taken between choosing and binding it is retried with another one.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.write_config()
        for _attempt in range(3):
            self.port = free_port()
            storage = self.workdir / f"data-{self.port}"
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [
                        self.binary,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={storage}",
                        f"--web.listen-address={LOOPBACK}:{self.port}",
                        "--storage.tsdb.retention.time=1h",
                        "--log.level=warn",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                )
            if self._wait_ready(timeout):
                return self
            self.stop()
            if "address already in use" not in self.log_tail():
                break
        raise RuntimeError(f"Prometheus did not become ready in {timeout}s; log:\n{self.log_tail()}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                status, _ = http_get(f"{self.url}/-/ready", timeout=1.0)
            except OSError:
                status = 0
            if status == 200:
                return True
            time.sleep(0.1)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process by PID: SIGTERM, wait, then SIGKILL. Safe to call twice."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    # -- HTTP API --------------------------------------------------------------------------

    def query_raw(self, expr: str, at: float | None = None) -> tuple[int, dict[str, Any]]:
        """Run an instant query; return (HTTP status, decoded JSON body)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        status, body = http_get(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}")
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {"status": "error", "error": body[:500].decode(errors="replace")}
        return status, payload

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Run an instant query and return its result list; raise :class:`PromQueryError`."""
        status, payload = self.query_raw(expr, at)
        if status != 200 or payload.get("status") != "success":
            raise PromQueryError(
                f"query failed (HTTP {status}, {payload.get('errorType')}: {payload.get('error')}): {expr}"
            )
        data = payload["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
        interval: float = 0.25,
    ) -> list[dict[str, Any]]:
        """Poll ``expr`` until ``predicate(result)`` holds; raise ``TimeoutError`` if it never does."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"after {timeout}s, {expr} -> {result!r}")
            time.sleep(interval)

    def targets_health(self) -> list[dict[str, Any]]:
        """The active scrape targets with their health and last error."""
        _, body = http_get(f"{self.url}/api/v1/targets")
        return json.loads(body)["data"]["activeTargets"]


def sample_values(result: list[dict[str, Any]]) -> list[float]:
    """The float values of an instant-query result (vector or scalar)."""
    return [float(item["value"][1]) for item in result]


def has_finite_value(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(value) for value in sample_values(result))


# -- the shipped dashboards' queries ---------------------------------------------------------

#: Grafana's range variables and the durations the tests put in their place.
RANGE_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
_GRAFANA_VARIABLE = re.compile(r"\$\{(?P<braced>[\w.]+)(?::\w+)?\}|\$(?P<plain>\w+)|\[\[(?P<old>\w+)\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$", re.S)


def grafana_variables(text: str) -> list[str]:
    """Names of the Grafana variables referenced in ``text`` (``$x``, ``${x:fmt}``, ``[[x]]``)."""
    return [m["braced"] or m["plain"] or m["old"] for m in _GRAFANA_VARIABLE.finditer(text)]


def substitute(expr: str, ranges: dict[str, str] | None = None, value: str = ".*", **extra: str) -> str:
    """Replace Grafana variables the way Grafana would before sending ``expr`` to Prometheus.

    Range variables become the durations in ``ranges`` (default :data:`RANGE_VARIABLES`);
    ``extra`` names other built-ins (e.g. ``__tags``); every other variable, i.e. a
    dashboard's template variable, becomes ``value`` (``.*``: "All").
    """
    durations = {**RANGE_VARIABLES, **(ranges or {})}

    def repl(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"] or match["old"]
        if name in durations:
            return durations[name]
        if name in extra:
            return extra[name]
        return value

    return _GRAFANA_VARIABLE.sub(repl, expr)


@dataclass(frozen=True)
class DashboardQuery:
    """One PromQL query of a shipped dashboard, as written there (variables unexpanded)."""

    dashboard: str
    where: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard}: {self.where}: {self.expr}"


def load_dashboards() -> dict[str, dict[str, Any]]:
    """The shipped dashboards by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def panel_queries(name: str, dashboard: dict[str, Any]) -> list[DashboardQuery]:
    """The ``expr`` of every Prometheus target of every panel."""
    out = []
    for panel in iter_panels(dashboard.get("panels") or []):
        for target in panel.get("targets") or []:
            if "expr" in target:
                where = f"panel {panel.get('title')!r} ref {target.get('refId')}"
                out.append(DashboardQuery(name, where, target["expr"]))
    return out


def variable_queries(name: str, dashboard: dict[str, Any]) -> list[tuple[DashboardQuery, str]]:
    """``(selector query, label)`` for each ``label_values(selector, label)`` template variable."""
    out = []
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") != "query" or not isinstance(query, str):
            continue
        match = _LABEL_VALUES.match(query)
        if match is None:
            raise AssertionError(f"{name}: variable {variable['name']}: not label_values(...): {query}")
        selector = match["selector"] or '{__name__=~".+"}'
        out.append((DashboardQuery(name, f"variable ${variable['name']}", selector), match["label"]))
    return out


def promql() -> ModuleType:
    """The promql_parser module (a real PromQL parser), or skip/fail if it is missing."""
    return require_module("promql_parser", "promql-parser")


def metric_names(expr: str) -> set[str | None]:
    """Metric names selected by ``expr`` (variables already substituted); None for a
    selector without a literal name (``{__name__=~"..."}``)."""
    parser = promql()
    names: set[str | None] = set()

    def visit(node: Any) -> None:
        if isinstance(node, parser.VectorSelector):
            names.add(node.name)

    parser.walk(parser.parse(expr), visit)
    return names
