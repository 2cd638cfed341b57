"""Every environment variable otelflow reads, with its rule, default and meaning.

Each variable is a module constant holding its name (``OTEL_SERVICE_NAME ==
"OTEL_SERVICE_NAME"``), declared together with an :class:`EnvVar` entry in
:data:`ENV_VARS`. That table is the single source for the loader
(:func:`otelflow.config.load_settings`) and for ``docs/configuration.md``
(``python -m otelflow.config.render``), so the documentation cannot drift from the code.

``OTEL_*`` names follow the OpenTelemetry specification; ``OTELFLOW_*`` names exist only
for what OpenTelemetry has no name for.

Each variable's :class:`~otelflow.config.parse.Rule` says what it accepts; the parsers that
apply the rules live in :mod:`otelflow.config.parse` (and are re-exported here). Everything
here is pure and thread-safe; nothing reads ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

# The parsers lived in this module before otelflow.config.parse: still importable from here.
from otelflow.config.parse import (  # noqa: F401 - Source and the parse_* functions are re-exported
    Kind,
    Rule,
    Source,
    parse_bool,
    parse_choice,
    parse_choices,
    parse_float,
    parse_int,
    parse_mapping,
    parse_path,
    parse_str,
    parse_url,
)


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One environment variable otelflow honours.

    Attributes:
        name: The variable's name.
        rule: What it accepts; ``rule.kind`` is its type.
        meaning: One or two sentences for the documentation.
        fields: The :class:`~otelflow.config.Settings` field(s) it feeds, dotted for
            nested ones (``otlp_traces.endpoint``).
        group: Heading it is listed under in the documentation.
        default: The default written as the variable would be, or None when there is no
            default or it is computed from other values (then see ``default_doc``).
        default_doc: How the default reads in the documentation when ``default`` alone
            does not say it.
        secret: The value may hold credentials: never logged, echoed in errors, or
            written to ``run.json``.
        scale: Factor from the variable's unit to the field's (0.001 for milliseconds
            into seconds).
    """

    name: str
    rule: Rule
    meaning: str
    fields: tuple[str, ...]
    group: str
    default: str | None = None
    default_doc: str | None = None
    secret: bool = False
    scale: float = 1.0

    @property
    def kind(self) -> Kind:
        """The variable's type (``bool``, ``int``, ``float``, ...)."""
        return self.rule.kind

    @property
    def accepted(self) -> str:
        """What the variable accepts, in words."""
        return self.rule.expected

    @property
    def is_otel(self) -> bool:
        """True for a variable of the OpenTelemetry specification, False for ``OTELFLOW_*``."""
        return self.name.startswith("OTEL_")

    @property
    def default_text(self) -> str:
        """The default as the documentation shows it."""
        if self.default_doc is not None:
            return self.default_doc
        return "(unset)" if self.default is None else self.default

    def read(self, environ: Mapping[str, str]) -> str | None:
        """Return the variable's stripped text from ``environ``; empty counts as unset (None)."""
        raw = environ.get(self.name)
        if raw is None:
            return None
        return raw.strip() or None


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------

_BOOL = Rule("bool", "true or false (also 1/0, yes/no, on/off, any case)")
# Every number has a sane range: an absurd value (1e300 s, 1e-9 s) is a typo, and would
# overflow a timer or make a background thread spin; it is refused with a ConfigError.
_MILLIS = Rule("float", "a number of milliseconds from 1 to 3600000 (one hour)", low=1.0, high=3_600_000.0)
_EXPORT_MILLIS = Rule(
    "float", "a number of milliseconds from 100 to 86400000 (one day)", low=100.0, high=86_400_000.0
)
_URL = Rule("url", "an http:// or https:// URL with a host")
_PROTOCOL = Rule("choice", "grpc or http/protobuf", choices=("grpc", "http/protobuf"))
_HEADERS = Rule("headers", "comma-separated key=value pairs with URL-encoded values")
_COMPRESSION = Rule("choice", "gzip or none", choices=("gzip", "none"))
_CHECKPOINT_SECONDS = Rule("float", "a number of seconds from 0.1 to 86400 (one day)", low=0.1, high=86_400.0)

GROUPS: Final[tuple[str, ...]] = (
    "General",
    "Exporters",
    "OTLP exporter",
    "Prometheus",
    "Sampling",
    "Trace shape",
    "Metric export",
    "Span export batching",
    "Run directory and pipeline",
    "Logs",
    "Live view",
)
"""Documentation headings, in order; every :attr:`EnvVar.group` is one of them."""

_declared: dict[str, EnvVar] = {}


def _declare(
    name: str,
    rule: Rule,
    meaning: str,
    *,
    fields: tuple[str, ...],
    group: str,
    default: str | None = None,
    default_doc: str | None = None,
    secret: bool = False,
    scale: float = 1.0,
) -> str:
    """Add a variable to :data:`ENV_VARS` and return its name for the module constant."""
    assert group in GROUPS and name not in _declared, name
    _declared[name] = EnvVar(name, rule, meaning, fields, group, default, default_doc, secret, scale)
    return name


def _per_signal(generic: str, signal: str) -> str:
    return generic.replace("OTEL_EXPORTER_OTLP_", f"OTEL_EXPORTER_OTLP_{signal.upper()}_")


def _declare_signal(generic: str, signal: str) -> str:
    base = _declared[generic]
    name = _per_signal(generic, signal)
    if base.rule.kind == "url":
        meaning = f"URL of the OTLP {signal} receiver, used as is (nothing appended)."
        default_doc = f"`{generic}`, with `/v1/{signal}` appended for http/protobuf"
        fields: tuple[str, ...] = (f"otlp_{signal}.endpoint", f"{signal}_exporters")
    else:
        meaning = f"As `{generic}`, for {signal} only; beats it when both are set."
        default_doc = f"`{generic}`"
        fields = tuple(f for f in base.fields if f.startswith(f"otlp_{signal}."))
    return _declare(
        name,
        base.rule,
        meaning,
        fields=fields,
        group=base.group,
        default_doc=default_doc,
        secret=base.secret,
        scale=base.scale,
    )


# --- General -----------------------------------------------------------------------------

OTEL_SDK_DISABLED: Final = _declare(
    "OTEL_SDK_DISABLED",
    _BOOL,
    "`true` turns otelflow off entirely, as it turns off the OpenTelemetry SDK: no spans, "
    "metrics or run directory, and `emit()` does nothing. As in the OTel spec, any other "
    "value leaves it on (never an error: a broken switch must not stop you switching off).",
    fields=("enabled",),
    group="General",
    default="false",
)
OTELFLOW_TELEMETRY: Final = _declare(
    "OTELFLOW_TELEMETRY",
    _BOOL,
    "otelflow's own switch: `0`, `false` or `off` turns otelflow off and leaves any other "
    "OpenTelemetry use in the process alone.",
    fields=("enabled",),
    group="General",
    default="true",
)
OTEL_SERVICE_NAME: Final = _declare(
    "OTEL_SERVICE_NAME",
    Rule("str", "a non-empty string"),
    "The `service.name` resource attribute. Unset: the OpenTelemetry SDK's default applies.",
    fields=("service_name",),
    group="General",
)
OTEL_RESOURCE_ATTRIBUTES: Final = _declare(
    "OTEL_RESOURCE_ATTRIBUTES",
    Rule("mapping", "comma-separated key=value pairs with URL-encoded values"),
    "Extra resource attributes. The OpenTelemetry SDK's `Resource` reads them; otelflow "
    "checks the syntax and records them in `run.json`.",
    fields=("resource_attributes",),
    group="General",
)

# --- Exporters ---------------------------------------------------------------------------

OTEL_TRACES_EXPORTER: Final = _declare(
    "OTEL_TRACES_EXPORTER",
    Rule(
        "choices",
        "a comma-separated list of otlp and console, or none",
        choices=("otlp", "console", "none"),
    ),
    "Where spans go besides the run directory, which is always written.",
    fields=("traces_exporters",),
    group="Exporters",
    default_doc="`none`; `otlp` when an OTLP endpoint (generic or traces) is set",
)
OTEL_METRICS_EXPORTER: Final = _declare(
    "OTEL_METRICS_EXPORTER",
    Rule(
        "choices",
        "a comma-separated list of otlp, prometheus and console, or none",
        choices=("otlp", "prometheus", "console", "none"),
    ),
    "Where metrics go besides the run directory. `prometheus` serves a scrape endpoint "
    "on `OTEL_EXPORTER_PROMETHEUS_HOST:PORT`.",
    fields=("metrics_exporters", "prometheus_port"),
    group="Exporters",
    default_doc="`none`; `otlp` when an OTLP endpoint (generic or metrics) is set",
)

OTEL_LOGS_EXPORTER: Final = _declare(
    "OTEL_LOGS_EXPORTER",
    Rule(
        "choices",
        "a comma-separated list of otlp and console, or none",
        choices=("otlp", "console", "none"),
    ),
    "Where captured log records go besides the run directory, as OTel log records with "
    "trace and span ids (only when logs are captured: `OTELFLOW_CAPTURE_LOGGERS`, "
    "`OTELFLOW_CAPTURE_LOGS` or `capture_logging()`). OTLP logs use the traces' protocol, "
    "headers, compression and timeout.",
    fields=("logs_exporters",),
    group="Exporters",
    default_doc="`none`; `otlp` when an OTLP endpoint (generic or logs) is set",
)

# --- OTLP exporter -----------------------------------------------------------------------

OTEL_EXPORTER_OTLP_ENDPOINT: Final = _declare(
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    _URL,
    "Base URL of the OTLP receiver for both signals. With `http/protobuf`, `/v1/traces` or "
    "`/v1/metrics` is appended. Setting it makes `otlp` the default exporter.",
    fields=("otlp_traces.endpoint", "otlp_metrics.endpoint", "traces_exporters", "metrics_exporters"),
    group="OTLP exporter",
    default_doc="`http://localhost:4317` (grpc); `http://localhost:4318/v1/<signal>` (http/protobuf)",
)
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: Final = _declare_signal(OTEL_EXPORTER_OTLP_ENDPOINT, "traces")
OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: Final = _declare_signal(OTEL_EXPORTER_OTLP_ENDPOINT, "metrics")
OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: Final = _declare(
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    _URL,
    "URL of the OTLP logs receiver, used as is (nothing appended).",
    fields=("otlp_logs.endpoint", "logs_exporters"),
    group="OTLP exporter",
    default_doc="`OTEL_EXPORTER_OTLP_ENDPOINT`, with `/v1/logs` appended for http/protobuf",
)
OTEL_EXPORTER_OTLP_PROTOCOL: Final = _declare(
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    _PROTOCOL,
    "OTLP transport for both signals.",
    fields=("otlp_traces.protocol", "otlp_metrics.protocol"),
    group="OTLP exporter",
    default="grpc",
)
OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: Final = _declare_signal(OTEL_EXPORTER_OTLP_PROTOCOL, "traces")
OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: Final = _declare_signal(OTEL_EXPORTER_OTLP_PROTOCOL, "metrics")
OTEL_EXPORTER_OTLP_HEADERS: Final = _declare(
    "OTEL_EXPORTER_OTLP_HEADERS",
    _HEADERS,
    "Headers (gRPC metadata) sent with every export, e.g. `authorization=Bearer%20abc`. "
    "Secret: never logged or written to `run.json`.",
    fields=("otlp_traces.headers", "otlp_metrics.headers"),
    group="OTLP exporter",
    default_doc="(none)",
    secret=True,
)
OTEL_EXPORTER_OTLP_TRACES_HEADERS: Final = _declare_signal(OTEL_EXPORTER_OTLP_HEADERS, "traces")
OTEL_EXPORTER_OTLP_METRICS_HEADERS: Final = _declare_signal(OTEL_EXPORTER_OTLP_HEADERS, "metrics")
OTEL_EXPORTER_OTLP_COMPRESSION: Final = _declare(
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    _COMPRESSION,
    "Compression of OTLP exports for both signals.",
    fields=("otlp_traces.compression", "otlp_metrics.compression"),
    group="OTLP exporter",
    default="none",
)
OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: Final = _declare_signal(OTEL_EXPORTER_OTLP_COMPRESSION, "traces")
OTEL_EXPORTER_OTLP_METRICS_COMPRESSION: Final = _declare_signal(OTEL_EXPORTER_OTLP_COMPRESSION, "metrics")
OTEL_EXPORTER_OTLP_TIMEOUT: Final = _declare(
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    _MILLIS,
    "How long one OTLP export may take, in milliseconds, for both signals.",
    fields=("otlp_traces.timeout_s", "otlp_metrics.timeout_s"),
    group="OTLP exporter",
    default="10000",
    scale=0.001,
)
OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: Final = _declare_signal(OTEL_EXPORTER_OTLP_TIMEOUT, "traces")
OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: Final = _declare_signal(OTEL_EXPORTER_OTLP_TIMEOUT, "metrics")
OTEL_EXPORTER_OTLP_INSECURE: Final = _declare(
    "OTEL_EXPORTER_OTLP_INSECURE",
    _BOOL,
    "gRPC only: `true` sends without TLS. Unset: decided by the endpoint's scheme "
    "(`http` plaintext, `https` TLS).",
    fields=("otlp_traces.insecure", "otlp_metrics.insecure"),
    group="OTLP exporter",
)
OTEL_EXPORTER_OTLP_TRACES_INSECURE: Final = _declare_signal(OTEL_EXPORTER_OTLP_INSECURE, "traces")
OTEL_EXPORTER_OTLP_METRICS_INSECURE: Final = _declare_signal(OTEL_EXPORTER_OTLP_INSECURE, "metrics")


# --- Prometheus --------------------------------------------------------------------------

OTEL_EXPORTER_PROMETHEUS_HOST: Final = _declare(
    "OTEL_EXPORTER_PROMETHEUS_HOST",
    Rule("str", "a host name or IP address", pattern=r"[^\s/]+"),
    "Address the Prometheus scrape endpoint binds to. otelflow's default is `127.0.0.1`, "
    "not OpenTelemetry's `localhost`: a name can resolve to a non-loopback address, and "
    "metrics should not leave the machine unless asked.",
    fields=("prometheus_host",),
    group="Prometheus",
    default="127.0.0.1",
)
OTEL_EXPORTER_PROMETHEUS_PORT: Final = _declare(
    "OTEL_EXPORTER_PROMETHEUS_PORT",
    Rule("int", "an integer port from 0 to 65535", low=0, high=65535),
    "Port of the Prometheus scrape endpoint, used when `prometheus` is a metrics exporter "
    "(0 picks a free port).",
    fields=("prometheus_port",),
    group="Prometheus",
    default="9464",
)

# --- Sampling ----------------------------------------------------------------------------

RATIO_SAMPLERS: Final[frozenset[str]] = frozenset({"traceidratio", "parentbased_traceidratio"})
"""Samplers that read :data:`OTEL_TRACES_SAMPLER_ARG`."""

OTEL_TRACES_SAMPLER: Final = _declare(
    "OTEL_TRACES_SAMPLER",
    Rule(
        "choice",
        "always_on, always_off, traceidratio, parentbased_always_on, "
        "parentbased_always_off or parentbased_traceidratio",
        choices=(
            "always_on",
            "always_off",
            "traceidratio",
            "parentbased_always_on",
            "parentbased_always_off",
            "parentbased_traceidratio",
        ),
    ),
    "Head sampler for spans sent to exporters.",
    fields=("sampler",),
    group="Sampling",
    default="parentbased_always_on",
)
OTEL_TRACES_SAMPLER_ARG: Final = _declare(
    "OTEL_TRACES_SAMPLER_ARG",
    Rule("float", "a number from 0 to 1", low=0.0, high=1.0),
    "Sampling ratio for `traceidratio` and `parentbased_traceidratio`; ignored (and not "
    "checked) for other samplers.",
    fields=("sampler_arg",),
    group="Sampling",
    default_doc="`1.0` for ratio samplers",
)

# --- Trace shape -------------------------------------------------------------------------

OTELFLOW_WAIT_SPANS: Final = _declare(
    "OTELFLOW_WAIT_SPANS",
    _BOOL,
    "`true` adds, next to each task span (which covers only the task's execution), a "
    "sibling span `wait <task name>` from the task's creation to its start, so a trace "
    "viewer's waterfall shows the wait band. The waits are always on the task span as "
    "attributes.",
    fields=("wait_spans",),
    group="Trace shape",
    default="false",
)

OTELFLOW_TRACE_PER: Final = _declare(
    "OTELFLOW_TRACE_PER",
    Rule("choice", "session or workflow", choices=("session", "workflow")),
    "`session`: the whole run is one trace. `workflow`: each `workflow_scope()` is a trace of "
    "its own (its blocks and tasks in it), linked to the session span and linked from it, "
    "so a viewer opens one workflow at a time. Use it from about 10 000 tasks per run: larger "
    "traces are slow or paged in Jaeger, Tempo and Phoenix.",
    fields=("trace_per",),
    group="Trace shape",
    default="session",
)

# --- Metric export -----------------------------------------------------------------------

OTEL_METRIC_EXPORT_INTERVAL: Final = _declare(
    "OTEL_METRIC_EXPORT_INTERVAL",
    _EXPORT_MILLIS,
    "Milliseconds between metric exports to OTLP and console exporters.",
    fields=("metric_export_interval_s",),
    group="Metric export",
    default="60000",
    scale=0.001,
)
OTEL_METRIC_EXPORT_TIMEOUT: Final = _declare(
    "OTEL_METRIC_EXPORT_TIMEOUT",
    _MILLIS,
    "How long one metric export may take, in milliseconds.",
    fields=("metric_export_timeout_s",),
    group="Metric export",
    default="30000",
    scale=0.001,
)

# --- Span export batching (OTel's batch span processor variables) ------------------------

OTEL_BSP_SCHEDULE_DELAY: Final = _declare(
    "OTEL_BSP_SCHEDULE_DELAY",
    Rule("float", "a number of milliseconds from 1 to 600000", low=1.0, high=600_000.0),
    "Longest wait, in milliseconds, before a partial batch of spans is exported over OTLP. "
    "otelflow's default is shorter than OTel's 5000, so a short run's spans leave promptly.",
    fields=("bsp_schedule_delay_s",),
    group="Span export batching",
    default="1000",
    scale=0.001,
)
OTEL_BSP_MAX_QUEUE_SIZE: Final = _declare(
    "OTEL_BSP_MAX_QUEUE_SIZE",
    Rule("int", "an integer from 1 to 10000000", low=1, high=10_000_000),
    "Most spans waiting for OTLP export; beyond it new spans are dropped and counted "
    "(`summary()['dropped']['export_failures_traces']`). otelflow's default is larger than "
    "OTel's 2048: task runs end spans in bursts.",
    fields=("bsp_max_queue_size",),
    group="Span export batching",
    default="16384",
)
OTEL_BSP_MAX_EXPORT_BATCH_SIZE: Final = _declare(
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    Rule("int", "an integer from 1 to 100000", low=1, high=100_000),
    "Most spans in one OTLP export call.",
    fields=("bsp_max_export_batch_size",),
    group="Span export batching",
    default="512",
)

# --- Run directory and pipeline ----------------------------------------------------------

OTELFLOW_RUNS_DIR: Final = _declare(
    "OTELFLOW_RUNS_DIR",
    Rule("path", "a directory path"),
    "Directory holding one sub-directory per run (`run.json` and one JSONL file per "
    "process). Relative paths are taken from the current directory.",
    fields=("runs_dir",),
    group="Run directory and pipeline",
    default="./.otelflow/runs",
)
OTELFLOW_RUN_ID: Final = _declare(
    "OTELFLOW_RUN_ID",
    Rule(
        "str",
        "1 to 128 characters from A-Z, a-z, 0-9, '.', '_' and '-', other than '.' and '..'",
        pattern=r"(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}",
    ),
    "Id of the run directory to use. Set it in worker processes so that they join an "
    "existing run instead of starting a new one.",
    fields=("run_id",),
    group="Run directory and pipeline",
    default_doc="(a new id per run)",
)
OTELFLOW_RESOURCE_POLL_INTERVAL: Final = _declare(
    "OTELFLOW_RESOURCE_POLL_INTERVAL",
    Rule(
        "float", "0 (off), or a number of seconds from 0.01 to 86400 (one day)", low=0.01, high=86_400.0, or_zero=True
    ),
    "Seconds between CPU, memory and GPU samples; `0` turns the resource monitor off.",
    fields=("resource_poll_interval",),
    group="Run directory and pipeline",
    default="5.0",
)
OTELFLOW_CHECKPOINT_INTERVAL: Final = _declare(
    "OTELFLOW_CHECKPOINT_INTERVAL",
    _CHECKPOINT_SECONDS,
    "Seconds between metric snapshots written to the JSONL file.",
    fields=("checkpoint_interval",),
    group="Run directory and pipeline",
    default="10.0",
)
OTELFLOW_FLUSH_INTERVAL: Final = _declare(
    "OTELFLOW_FLUSH_INTERVAL",
    Rule("float", "a number of seconds from 0.01 to 60", low=0.01, high=60.0),
    "Longest delay, in seconds, before a JSONL line reaches the disk.",
    fields=("flush_interval",),
    group="Run directory and pipeline",
    default="0.25",
)
OTELFLOW_JSONL: Final = _declare(
    "OTELFLOW_JSONL",
    _BOOL,
    "Write events, spans and metric snapshots to the run directory's JSONL files.",
    fields=("jsonl",),
    group="Run directory and pipeline",
    default="true",
)
OTELFLOW_JSONL_COMPRESSION: Final = _declare(
    "OTELFLOW_JSONL_COMPRESSION",
    Rule("choice", "none or zstd", choices=("none", "zstd")),
    "`zstd` writes the JSONL files as `*.jsonl.zst`, one zstd frame per flush (~10× smaller; "
    "needs `pip install 'otelflow[zstd]'`): a killed process loses at most its last frame and "
    "`zstdcat FILE | jq` reads them. Every otelflow reader reads both forms.",
    fields=("jsonl_compression",),
    group="Run directory and pipeline",
    default="none",
)
OTELFLOW_CONSOLE: Final = _declare(
    "OTELFLOW_CONSOLE",
    _BOOL,
    "Print an indented span tree to stderr when telemetry stops.",
    fields=("console",),
    group="Run directory and pipeline",
    default="false",
)
OTELFLOW_HANDLE_SIGNALS: Final = _declare(
    "OTELFLOW_HANDLE_SIGNALS",
    _BOOL,
    "On SIGTERM or SIGHUP, stop the telemetry (drain, write `run.json`) and then hand the "
    "signal on to the handler that was there before (the default one ends the process). "
    "Off, a terminated run reads as \"ended without stop() (killed?)\".",
    fields=("handle_signals",),
    group="Run directory and pipeline",
    default="false",
)
OTELFLOW_QUEUE_SIZE: Final = _declare(
    "OTELFLOW_QUEUE_SIZE",
    Rule("int", "an integer from 1024 to 16777216", low=1024, high=16_777_216),
    "Most events in flight on the bus between `emit()` and the dispatcher.",
    fields=("queue_size",),
    group="Run directory and pipeline",
    default="65536",
)
OTELFLOW_QUEUE_FULL: Final = _declare(
    "OTELFLOW_QUEUE_FULL",
    Rule("choice", "wait or drop", choices=("wait", "drop")),
    "What `emit()` does when the bus is full: `wait` briefly throttles the producer until "
    "the dispatcher catches up (lossless); `drop` drops the event and counts it.",
    fields=("queue_full",),
    group="Run directory and pipeline",
    default="wait",
)
OTELFLOW_SET_GLOBAL_PROVIDERS: Final = _declare(
    "OTELFLOW_SET_GLOBAL_PROVIDERS",
    Rule(
        "choice",
        "auto, true or false (also 1/0, yes/no, on/off)",
        choices=("auto", "true", "false"),
    ),
    "Whether to install otelflow's tracer and meter providers as the OpenTelemetry "
    "globals: `auto` does so only if none is set yet.",
    fields=("set_global_providers",),
    group="Run directory and pipeline",
    default="auto",
)

# --- Logs --------------------------------------------------------------------------------

OTELFLOW_CAPTURE_LOGS: Final = _declare(
    "OTELFLOW_CAPTURE_LOGS",
    _BOOL,
    "Bridge Python `logging` records into the run, with trace and span ids.",
    fields=("capture_logs",),
    group="Logs",
    default="false",
)
OTELFLOW_LOG_LEVEL: Final = _declare(
    "OTELFLOW_LOG_LEVEL",
    Rule(
        "choice",
        "DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    ),
    "Lowest level of the log records captured when `OTELFLOW_CAPTURE_LOGS` is on.",
    fields=("log_level",),
    group="Logs",
    default="INFO",
)

OTELFLOW_CAPTURE_LOGGERS: Final = _declare(
    "OTELFLOW_CAPTURE_LOGGERS",
    Rule("str", "comma-separated logger names (`root` for the root logger)", pattern=r"[\w.\-]+(\s*,\s*[\w.\-]+)*"),
    "Capture these loggers' records into the run as wide events (every `extra` field "
    "kept), like `otelflow.capture_logging(...)`. Their handlers and levels are not "
    "changed; records below `OTELFLOW_LOG_LEVEL` are not captured.",
    fields=("capture_loggers",),
    group="Logs",
    default_doc="(none)",
)

# --- Live view ---------------------------------------------------------------------------

OTELFLOW_LIVE_PORT: Final = _declare(
    "OTELFLOW_LIVE_PORT",
    Rule("int", "a port number from 0 to 65535 (0 picks a free one)", low=0, high=65535),
    "Serve the live view (a page and an SSE `/events` stream of the run) on this port.",
    fields=("live_port",),
    group="Live view",
    default_doc="(off)",
)
OTELFLOW_LIVE_HOST: Final = _declare(
    "OTELFLOW_LIVE_HOST",
    Rule("str", "a host name or IP address", pattern=r"[A-Za-z0-9.\-:\[\]%]+"),
    "Address the live view binds to; `0.0.0.0` (all interfaces) is logged as a warning.",
    fields=("live_host",),
    group="Live view",
    default="127.0.0.1",
)

ENV_VARS: Final[Mapping[str, EnvVar]] = MappingProxyType(_declared)
"""Every variable otelflow reads, by name, in documentation order (grouped by :data:`GROUPS`)."""
