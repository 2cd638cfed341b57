"""The deployment files hold together: dashboards, compose file, collector and Grafana config.

Each check uses the real tool where there is one: Grafana's own dashboard types (as JSON
Schema, from npm ``@grafana/schema``), the Docker Compose binary, a PromQL parser and
``promtool``. Tools come from ``.ci/install-tools``; a missing one skips locally and fails
under CI.

The metric and span-attribute names below are the contract between otelflow and these
files: a dashboard may query only these names, with only these labels.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

try:
    from . import promtools
except ImportError:  # tests/integration is not a package: imported by rootdir path
    import promtools

REPO = promtools.REPO
DASHBOARD_FILES = ("otelflow-workflow.json", "otelflow-resources.json")
SCHEMAS = REPO / ".tools" / "grafana-schema" / "schemas"
COMPOSE_BIN = REPO / ".tools" / "compose"
COMPOSE_FILE = REPO / "docker-compose.yml"
COLLECTOR_CONFIG = REPO / "collector-config" / "otel-collector.yaml"
PROMETHEUS_CONFIG = REPO / "collector-config" / "prometheus.yml"
DATASOURCES_DIR = REPO / "grafana" / "provisioning" / "datasources"
DASHBOARD_PROVIDERS_DIR = REPO / "grafana" / "provisioning" / "dashboards"

# -- the contract ---------------------------------------------------------------------------

_TASK = frozenset({"task_name", "workflow_name", "backend"})
TASK_STATES = ("created", "resolved", "submitted", "queued", "started", "completed", "failed", "canceled")
#: Prometheus metric name -> its labels (besides the scrape's and the scope's, below).
METRICS: dict[str, frozenset[str]] = {
    **{f"otelflow_tasks_{state}_total": _TASK for state in TASK_STATES},
    "otelflow_tasks_running": _TASK,
    "otelflow_tasks_queued": _TASK,
    "otelflow_workflows_active": frozenset({"workflow_name"}),
    "otelflow_node_cpu_utilization": frozenset({"node"}),
    "otelflow_node_memory_utilization": frozenset({"node"}),
    "otelflow_node_memory_used_bytes": frozenset({"node"}),
    "otelflow_node_disk_io_bytes_total": frozenset({"node", "direction"}),
    "otelflow_node_network_io_bytes_total": frozenset({"node", "direction"}),
    "otelflow_process_cpu_utilization": frozenset({"node", "process"}),
    "otelflow_process_memory_rss_bytes": frozenset({"node", "process"}),
    "otelflow_gpu_utilization": frozenset({"node", "gpu"}),
    "otelflow_gpu_memory_used_bytes": frozenset({"node", "gpu"}),
    "otelflow_gpu_memory_total_bytes": frozenset({"node", "gpu"}),
    "otelflow_telemetry_events_dropped_total": frozenset(),
    "otelflow_telemetry_queue_depth": frozenset(),
    "otelflow_telemetry_throttled_seconds_total": frozenset(),
    "target_info": frozenset({"service_name", "service_version", "service_instance_id", "host_name"}),
}
#: Histogram base name -> labels; each is exposed as _bucket (plus "le"), _sum and _count.
HISTOGRAMS: dict[str, frozenset[str]] = {
    "otelflow_task_duration_seconds": _TASK | {"status"},
    "otelflow_task_dependency_wait_seconds": _TASK,
    "otelflow_task_dispatch_wait_seconds": _TASK,
    "otelflow_task_queue_wait_seconds": _TASK,
    "otelflow_workflow_duration_seconds": frozenset({"workflow_name", "status"}),
    "otelflow_task_cpu_time_seconds": frozenset({"task_name", "backend"}),
    "otelflow_task_peak_rss_bytes": frozenset({"task_name", "backend"}),
}
#: The values a label with a fixed vocabulary can take.
LABEL_VALUES: dict[str, frozenset[str]] = {
    "status": frozenset({"completed", "failed", "canceled", "incomplete"}),  # incomplete: workflows only
    "direction": frozenset({"read", "write", "receive", "transmit"}),
    "process": frozenset({"self", "children"}),
}
#: Labels every series has: from the scrape, and from the OTel exporter (instrumentation scope).
COMMON_LABELS = frozenset({"job", "instance", "otel_scope_name", "otel_scope_version", "otel_scope_schema_url"})
#: Span attributes otelflow sets; trace links may search for these.
SPAN_ATTRIBUTES = frozenset({
    "otelflow.workflow.id", "otelflow.workflow.name", "otelflow.block.id",
    "otelflow.task.id", "otelflow.task.name", "otelflow.task.status",
})  # fmt: skip
#: The only template variable names the dashboards may define.
TEMPLATE_VARIABLES = frozenset({"workflow", "task", "node"})
#: Grafana built-in variables the dashboards may use.
BUILTIN_VARIABLES = frozenset({"__rate_interval", "__interval", "__range", "__from", "__to", "__tags"})


def contract_labels() -> dict[str, frozenset[str]]:
    """Every selectable Prometheus name -> the labels its series can carry."""
    names = {name: labels | COMMON_LABELS for name, labels in METRICS.items()}
    for base, labels in HISTOGRAMS.items():
        names[f"{base}_bucket"] = labels | COMMON_LABELS | {"le"}
        names[f"{base}_sum"] = labels | COMMON_LABELS
        names[f"{base}_count"] = labels | COMMON_LABELS
    return names


# -- helpers ----------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    yaml = promtools.require_module("yaml", "PyYAML")
    return yaml.safe_load(path.read_text())


@cache
def dashboards() -> dict[str, dict[str, Any]]:
    return promtools.load_dashboards()


def dashboard(name: str) -> dict[str, Any]:
    loaded = dashboards()
    assert name in loaded, f"grafana/dashboards/{name} is missing"
    return loaded[name]


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    """Provisioned data sources by uid."""
    out = {}
    for path in sorted(DATASOURCES_DIR.glob("*.y*ml")):
        for ds in load_yaml(path).get("datasources") or []:
            out[ds["uid"]] = ds
    return out


def compose_model() -> dict[str, Any]:
    """docker-compose.yml as the real Compose binary resolves it."""
    binary = promtools.require_tool(COMPOSE_BIN, "Docker Compose (.tools/compose)")
    proc = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def iter_strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, value) for every string in a YAML/JSON document."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from iter_strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from iter_strings(value, f"{path}[{i}]")


_ENDPOINT = re.compile(
    r"(?:\b[a-z][a-z0-9+.-]*://)?(?P<host>\[[0-9a-fA-F:]*\]|[A-Za-z0-9_.-]*):(?P<port>\d{2,5})\b(?![.:\d])"
)
_LISTEN_HOSTS = frozenset({"0.0.0.0", "localhost", "127.0.0.1", "", "[::]", "[::1]"})


def endpoints(text: str) -> list[tuple[str, int]]:
    return [(m["host"], int(m["port"])) for m in _ENDPOINT.finditer(text)]


def parse_promql(expr: str, where: str) -> Any:
    parser = promtools.promql()
    try:
        return parser.parse(expr)
    except ValueError as error:
        pytest.fail(f"{where}: does not parse as PromQL ({error}): {expr}")


# Durations that stand for Grafana's range variables while checking how they are used.
_SENTINELS = {"__rate_interval": "7777s", "__range": "8888s", "__interval": "9999s"}
_RATE_INTERVAL = timedelta(seconds=7777)


def check_promql(
    expr: str, where: str, names: dict[str, frozenset[str]], *, rate_interval: bool = True, **extra: str
) -> list[str]:
    """Problems with one query: names and labels outside the contract, and (if
    ``rate_interval``) rate()/increase() windows other than $__rate_interval."""
    parser = promtools.promql()
    tree = parse_promql(promtools.substitute(expr, _SENTINELS, "x", **extra), where)
    problems: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, parser.VectorSelector):
            if node.name is None:
                problems.append(f"{where}: selector without a literal metric name: {node}")
            elif node.name not in names:
                problems.append(f"{where}: {node.name} is not an otelflow metric")
            else:
                for matcher in node.matchers.matchers:
                    if matcher.name not in names[node.name]:
                        problems.append(f"{where}: {node.name} has no label {matcher.name!r}")
                    elif str(matcher.op) in ("MatchOp.Equal", "MatchOp.NotEqual") and matcher.value not in (
                        LABEL_VALUES.get(matcher.name) or {matcher.value}
                    ):
                        problems.append(f"{where}: {matcher.name}={matcher.value!r} is not a value otelflow uses")
        elif rate_interval and isinstance(node, parser.Call) and node.func.name in ("rate", "irate", "increase"):
            if getattr(node.args[0], "range", None) != _RATE_INTERVAL:
                problems.append(f"{where}: {node.func.name}() window is not $__rate_interval: {expr}")
        elif isinstance(node, parser.AggregateExpr) and node.modifier is not None:
            used = _labels_below(parser, node.expr, names)
            for label in node.modifier.labels:
                if used is not None and label not in used:
                    problems.append(f"{where}: aggregation by {label!r}, which {sorted(used)} lack")

    parser.walk(tree, visit)
    return problems


def _labels_below(parser: Any, node: Any, names: dict[str, frozenset[str]]) -> set[str] | None:
    """Labels any series selected below ``node`` may have (None if unknown)."""
    labels: set[str] = set()
    unknown = False

    def visit(n: Any) -> None:
        nonlocal unknown
        if isinstance(n, parser.VectorSelector):
            if n.name in names:
                labels.update(names[n.name])
            else:
                unknown = True

    parser.walk(node, visit)
    return None if unknown else labels


def dashboard_links(d: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, url) of every dashboard link and data link (field defaults and overrides)."""
    out = [(f"dashboard link {link['title']!r}", link.get("url", "")) for link in d.get("links") or []]
    for panel in promtools.iter_panels(d.get("panels") or []):
        config = panel.get("fieldConfig") or {}
        links = list((config.get("defaults") or {}).get("links") or [])
        for override in config.get("overrides") or []:
            for prop in override.get("properties") or []:
                if prop.get("id") == "links":
                    links.extend(prop.get("value") or [])
        links.extend(panel.get("links") or [])
        out += [(f"panel {panel.get('title')!r} link {link.get('title')!r}", link.get("url", "")) for link in links]
    return out


# -- dashboards -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_dashboard_validates_against_grafana_schema(name: str) -> None:
    jsonschema = promtools.require_module("jsonschema", "jsonschema")
    if not (SCHEMAS / "dashboard.schema.json").is_file():
        promtools.missing_tool("Grafana dashboard JSON Schemas (.tools/grafana-schema)")
    d = dashboard(name)

    def errors(schema_file: str, instance: Any, where: str) -> list[str]:
        schema = json.loads((SCHEMAS / schema_file).read_text())
        validator = jsonschema.Draft7Validator(schema)
        return [f"{where}/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]

    problems = errors("dashboard.schema.json", d, name)
    for panel in promtools.iter_panels(d.get("panels") or []):
        kind = panel["type"]
        if kind == "row":
            continue
        where = f"{name}: panel {panel.get('title')!r} ({kind})"
        options_schema = f"panel.{kind}.Options.schema.json"
        if not (SCHEMAS / options_schema).is_file():
            problems.append(f"{where}: no schema for panel type {kind!r}; add it to PANEL_TYPES in .ci/install-tools")
            continue
        problems += errors(options_schema, panel.get("options") or {}, f"{where} options")
        custom = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("custom")
        field_schema = f"panel.{kind}.FieldConfig.schema.json"
        if (SCHEMAS / field_schema).is_file():
            problems += errors(field_schema, custom or {}, f"{where} fieldConfig.defaults.custom")
        elif custom:
            problems.append(f"{where}: {kind} panels have no custom field config, but one is set")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_dashboard_structure_and_variables(name: str) -> None:
    d = dashboard(name)
    datasources = provisioned_datasources()
    problems = []

    uids = [x.get("uid") for x in dashboards().values()]
    if not d.get("uid") or uids.count(d["uid"]) != 1:
        problems.append(f"uid {d.get('uid')!r} missing or not unique")
    if "otelflow" not in (d.get("tags") or []):
        problems.append("not tagged 'otelflow' (the dashboard links list dashboards by that tag)")

    variables = [v["name"] for v in (d.get("templating") or {}).get("list") or []]
    if not set(variables) <= TEMPLATE_VARIABLES:
        extra = sorted(set(variables) - TEMPLATE_VARIABLES)
        problems.append(f"template variables {extra} are not among {sorted(TEMPLATE_VARIABLES)}")
    for variable in (d.get("templating") or {}).get("list") or []:
        if variable.get("includeAll") and variable.get("allValue") != ".*":
            problems.append(f"variable ${variable['name']}: 'All' must mean allValue '.*' (any value, even none)")

    panel_ids = []
    for panel in promtools.iter_panels(d.get("panels") or []):
        panel_ids.append(panel.get("id"))
        pos = panel.get("gridPos") or {}
        if pos.get("x", 0) + pos.get("w", 0) > 24:
            problems.append(f"panel {panel.get('title')!r} is wider than the 24-column grid")
        refs = [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets") or []]
        for ref in refs:
            if ref and ref.get("uid") not in datasources:
                problems.append(f"panel {panel.get('title')!r}: data source uid {ref.get('uid')!r} is not provisioned")
    if len(panel_ids) != len(set(panel_ids)):
        problems.append(f"panel ids are not unique: {panel_ids}")

    texts = [q.expr for q in promtools.panel_queries(name, d)]
    texts += [q.expr for q, _ in promtools.variable_queries(name, d)]
    for text in texts:
        for var in promtools.grafana_variables(text):
            if var not in variables and var not in BUILTIN_VARIABLES:
                problems.append(f"undefined variable ${var} in: {text}")
        # A template variable expands to a regex ('All' is '.*'): only =~ / !~ can take it.
        for m in re.finditer(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', text):
            if any(v in variables for v in promtools.grafana_variables(m[3])) and m[2] not in ("=~", "!~"):
                problems.append(f"variable used with {m[2]} instead of =~ in: {text}")
    assert not problems, f"{name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_dashboard_queries_use_only_contract_metrics_and_labels(name: str) -> None:
    d = dashboard(name)
    names = contract_labels()
    queries = promtools.panel_queries(name, d)
    assert queries, f"{name} has no Prometheus queries"
    problems = []
    for query in queries:
        problems += check_promql(query.expr, f"{query.dashboard}: {query.where}", names)
    for query, label in promtools.variable_queries(name, d):
        where = f"{query.dashboard}: {query.where}"
        problems += check_promql(query.expr, where, names)
        for metric in promtools.metric_names(promtools.substitute(query.expr)):
            if metric in names and label not in names[metric]:
                problems.append(f"{where}: label_values of {label!r}, which {metric} lacks")
    assert not problems, "\n".join(problems)


def test_datasource_metric_queries_use_only_contract_metrics() -> None:
    """The Tempo/Jaeger -> Prometheus links (tracesToMetrics) query contract metrics, and
    their tag mappings map contract span attributes to contract labels."""
    names = contract_labels()
    problems = []
    found = 0
    for uid, ds in provisioned_datasources().items():
        t2m = (ds.get("jsonData") or {}).get("tracesToMetrics")
        if not t2m:
            continue
        if t2m.get("datasourceUid") not in provisioned_datasources():
            problems.append(f"{uid}: tracesToMetrics points at unknown data source {t2m.get('datasourceUid')!r}")
        labels = set()
        for tag in t2m.get("tags") or []:
            labels.add(tag.get("value") or tag["key"])
            if tag["key"] not in SPAN_ATTRIBUTES:
                problems.append(f"{uid}: tag {tag['key']!r} is not an otelflow span attribute")
        for query in t2m.get("queries") or []:
            found += 1
            # Provisioning files escape a literal $ as $$; $__tags becomes label matchers.
            expr = query["query"].replace("$$", "$")
            tags = ", ".join(f'{label}="x"' for label in sorted(labels))
            # Grafana runs these over the span's time range: fixed windows are right here.
            problems += check_promql(expr, f"{uid}: {query['name']!r}", names, rate_interval=False, __tags=tags)
    assert found, "no tracesToMetrics queries found in the provisioned data sources"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_trace_links_open_tempo_with_otelflow_span_attributes(name: str) -> None:
    d = dashboard(name)
    datasources = provisioned_datasources()
    variables = {v["name"] for v in (d.get("templating") or {}).get("list") or []}
    problems = []
    explore_links = 0
    for where, url in dashboard_links(d):
        for var in promtools.grafana_variables(url):
            root = var.split(".")[0]
            if root not in variables and root not in BUILTIN_VARIABLES and root not in ("__field", "__value"):
                problems.append(f"{where}: unknown variable ${{{var}}}")
        if not url.startswith("/explore"):
            continue
        explore_links += 1
        # What the browser hands Grafana once it has filled in the variables.
        params = urllib.parse.parse_qs(urllib.parse.urlsplit(promtools.substitute(url, value="v")).query)
        panes = json.loads(params["panes"][0])
        for pane in panes.values():
            for query in pane["queries"]:
                ds = datasources.get(query["datasource"]["uid"])
                if ds is None or ds["type"] != "tempo":
                    problems.append(f"{where}: does not open a provisioned Tempo data source")
                if query.get("queryType") != "traceql":
                    problems.append(f"{where}: not a TraceQL query")
                for attribute in re.findall(r"\bspan\.([\w.]+)", query.get("query", "")):
                    if attribute not in SPAN_ATTRIBUTES:
                        problems.append(f"{where}: {attribute} is not an otelflow span attribute")
    assert explore_links, f"{name} has no links to traces in Tempo"
    assert not problems, "\n".join(problems)


def test_dashboards_are_provisioned_from_the_mounted_directory() -> None:
    """The dashboard provider reads the directory docker-compose.yml mounts grafana/dashboards at."""
    model = compose_model()
    mounts = {
        Path(v["source"]).resolve(): v["target"]
        for v in model["services"]["grafana"].get("volumes") or []
        if v.get("type") == "bind"
    }
    dashboards_target = mounts.get((REPO / "grafana" / "dashboards").resolve())
    provisioning_target = mounts.get((REPO / "grafana" / "provisioning").resolve())
    assert provisioning_target == "/etc/grafana/provisioning", mounts
    paths = [
        provider["options"]["path"]
        for path in sorted(DASHBOARD_PROVIDERS_DIR.glob("*.y*ml"))
        for provider in load_yaml(path)["providers"]
    ]
    assert paths == [dashboards_target], (paths, dashboards_target)


# -- docker-compose.yml ---------------------------------------------------------------------


def test_compose_file_passes_compose_config() -> None:
    binary = promtools.require_tool(COMPOSE_BIN, "Docker Compose (.tools/compose)")
    proc = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_compose_services_start_in_order_with_pinned_images() -> None:
    services = compose_model()["services"]
    assert set(services) == {"otel-collector", "jaeger", "tempo", "prometheus", "grafana", "demo"}
    problems = []
    for name, service in services.items():
        image = service.get("image", "")
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        if not tag or tag == "latest":
            problems.append(f"{name}: image {image!r} is not pinned to a version")
        # The collector image has no shell or HTTP client to run a healthcheck with.
        if name != "otel-collector" and not service.get("healthcheck", {}).get("test"):
            problems.append(f"{name}: no healthcheck")
        for dep, how in (service.get("depends_on") or {}).items():
            expected = "service_healthy" if services[dep].get("healthcheck", {}).get("test") else "service_started"
            if how.get("condition") != expected:
                problems.append(f"{name}: depends on {dep} with {how.get('condition')}, expected {expected}")
        for port in service.get("ports") or []:
            if port.get("host_ip") != "127.0.0.1":
                problems.append(f"{name}: port {port.get('published')} is published beyond 127.0.0.1")
    assert not problems, "\n".join(problems)

    grafana_env = services["grafana"]["environment"]
    assert grafana_env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana_env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"

    demo = services["demo"]
    assert demo["image"].startswith("python:3.11")
    assert "otelflow demo" in " ".join(demo["command"])
    env = demo["environment"]
    for var in ("OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
                "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_PROMETHEUS_PORT"):  # fmt: skip
        assert env.get(var), f"demo: {var} is not set"
    assert str(env["OTEL_EXPORTER_PROMETHEUS_PORT"]) in {str(p) for p in demo.get("expose") or []}


# -- collector and endpoints ----------------------------------------------------------------


def test_collector_pipelines_reference_defined_components() -> None:
    config = load_yaml(COLLECTOR_CONFIG)
    service = config["service"]
    problems = []
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline, spec in service["pipelines"].items():
        for kind, names in used.items():
            for component in spec.get(kind) or []:
                names.add(component)
                if component not in (config.get(kind) or {}):
                    problems.append(f"pipeline {pipeline}: {kind[:-1]} {component!r} is not defined")
        if not spec.get("receivers") or not spec.get("exporters"):
            problems.append(f"pipeline {pipeline}: needs receivers and exporters")
        processors = spec.get("processors") or []
        if processors[:1] != ["memory_limiter"] or processors[-1:] != ["batch"]:
            problems.append(f"pipeline {pipeline}: processors should start with memory_limiter and end with batch")
    for extension in service.get("extensions") or []:
        if extension not in (config.get("extensions") or {}):
            problems.append(f"extension {extension!r} is not defined")
    for kind, names in used.items():
        for unused in set(config.get(kind) or {}) - names:
            problems.append(f"{kind[:-1]} {unused!r} is defined but in no pipeline")
    assert "health_check" in (service.get("extensions") or [])
    assert {"traces", "metrics"} <= set(service["pipelines"])
    assert not problems, "\n".join(problems)


def test_every_endpoint_names_a_compose_service_and_a_port_it_listens_on() -> None:
    """host:port in the collector, Tempo, Prometheus and Grafana config and in the compose
    environment and healthchecks: a listen address must be a port its own service exposes;
    anything else must be a compose service and one of its ports."""
    services = compose_model()["services"]
    ports = {
        name: {int(p) for p in s.get("expose") or []} | {int(p["target"]) for p in s.get("ports") or []}
        for name, s in services.items()
    }
    # Which service reads which config file (from the bind mounts).
    owners: dict[Path, str] = {}
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            if volume.get("type") == "bind":
                owners[Path(volume["source"]).resolve()] = name

    def owner(path: Path) -> str:
        for candidate in (path, *path.parents):
            if candidate.resolve() in owners:
                return owners[candidate.resolve()]
        pytest.fail(f"{path.relative_to(REPO)} is not mounted into any compose service")

    sources: list[tuple[str, str, str]] = []  # (owning service, where, text)
    config_files = [*sorted((REPO / "collector-config").glob("*.y*ml")), *sorted(DATASOURCES_DIR.glob("*.y*ml"))]
    for path in config_files:
        service = owner(path)
        for where, text in iter_strings(load_yaml(path)):
            sources.append((service, f"{path.relative_to(REPO)}: {where}", text))
    for name, service in services.items():
        for var, value in (service.get("environment") or {}).items():
            sources.append((name, f"docker-compose.yml: {name}.environment.{var}", str(value or "")))
        for part in service.get("healthcheck", {}).get("test") or []:
            sources.append((name, f"docker-compose.yml: {name}.healthcheck", part))

    problems = []
    seen = set()
    for service, where, text in sources:
        for host, port in endpoints(text):
            target = service if host in _LISTEN_HOSTS else host
            seen.add((target, port))
            if target not in services:
                problems.append(f"{where}: {host}:{port}: no compose service {host!r}")
            elif port not in ports[target]:
                problems.append(f"{where}: {host}:{port}: {target} does not expose port {port}")
    assert not problems, "\n".join(problems)
    # The wiring the stack depends on was actually found (guards the scan itself).
    expected = {
        ("jaeger", 4317), ("tempo", 4317), ("otel-collector", 4317), ("otel-collector", 8889),
        ("demo", 9464), ("prometheus", 9090), ("tempo", 3200), ("jaeger", 16686),
    }  # fmt: skip
    assert expected <= seen, f"not found: {sorted(expected - seen)}"


def test_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    binary = promtools.require_tool(promtool, "promtool (Debian package prometheus)")
    proc = subprocess.run(
        [binary, "check", "config", str(PROMETHEUS_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
