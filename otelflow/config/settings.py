"""The resolved, validated configuration of one telemetry session.

:func:`load_settings` merges keyword arguments, environment variables and defaults into a
frozen :class:`Settings`. The rule is the same for every value: a non-None argument beats
the environment, which beats the default; per-signal OTLP variables beat generic ones. Every
value given — argument or variable — is checked, and the first bad one raises
:class:`~otelflow.errors.ConfigError` naming it, its value and what is accepted.

:data:`ARGUMENTS` lists the keyword arguments and the variables they override; the
documentation is rendered from it and from :data:`otelflow.config.env.ENV_VARS`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, cast
from urllib.parse import urlsplit

from otelflow.config import env as ev
from otelflow.config.env import ENV_VARS, RATIO_SAMPLERS
from otelflow.config.parse import (
    Parser,
    Rule,
    Source,
    parse_bool,
    parse_choice,
    parse_choices,
    parse_float,
    parse_int,
    parse_log_level,
    parse_mapping,
    parse_path,
    parse_set_global,
    parse_str,
    parse_url,
)
from otelflow.errors import ConfigError

T = TypeVar("T")

Signal = Literal["traces", "metrics"]
Protocol = Literal["grpc", "http/protobuf"]
Compression = Literal["gzip", "none"]
QueueFull = Literal["wait", "drop"]
SetGlobalProviders = Literal["auto", "true", "false"]

REDACTED: Final = "<redacted>"
"""What :meth:`Settings.redacted` writes in place of a secret."""

_BSP_SECONDS: Final = Rule("float", "a number of seconds from 0.001 to 600", low=0.001, high=600.0)
_EXPORT_SECONDS: Final = Rule("float", "a number of seconds from 0.1 to 86400 (one day)", low=0.1, high=86_400.0)
_TIMEOUT_SECONDS: Final = Rule("float", "a number of seconds from 0.001 to 3600", low=0.001, high=3600.0)
_OTLP_SETTINGS: Final = Rule("str", "an OtlpSettings instance")
_DEFAULT_OTLP_BASE: Final[Mapping[str, str]] = {
    "grpc": "http://localhost:4317",
    "http/protobuf": "http://localhost:4318",
}


@dataclass(frozen=True, slots=True)
class OtlpSettings:
    """How one signal (traces or metrics) is exported over OTLP.

    Attributes:
        endpoint: Full URL the exporter sends to (for ``http/protobuf`` including the
            ``/v1/<signal>`` path).
        protocol: ``grpc`` or ``http/protobuf``.
        headers: Headers (gRPC metadata) sent with every export; secret.
        compression: ``gzip`` or ``none``.
        timeout_s: How long one export may take, in seconds.
        insecure: gRPC only: True for plaintext, False for TLS, None to let the endpoint's
            scheme decide.
    """

    endpoint: str
    protocol: Protocol
    headers: dict[str, str]
    compression: Compression
    timeout_s: float
    insecure: bool | None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a telemetry session is configured with; built by :func:`load_settings`.

    Each field is documented by the variable(s) that feed it (see ``docs/configuration.md``).
    Times are in seconds. Instances are immutable and safe to share between threads.

    Attributes:
        enabled: False turns otelflow off entirely.
        service_name: ``service.name``, or None for the OTel SDK's default.
        resource_attributes: ``OTEL_RESOURCE_ATTRIBUTES`` as parsed; recorded in ``run.json``
            (the OTel SDK reads the variable itself).
        traces_exporters: Span exporters besides the run directory (``otlp``, ``console``);
            empty for none.
        metrics_exporters: Metric exporters besides the run directory (``otlp``,
            ``prometheus``, ``console``); empty for none.
        otlp_traces: OTLP settings for spans.
        otlp_metrics: OTLP settings for metrics.
        prometheus_host: Address the scrape endpoint binds to.
        prometheus_port: Port of the scrape endpoint, or None for no endpoint.
        sampler: Head sampler name (``OTEL_TRACES_SAMPLER`` values).
        sampler_arg: Ratio for ratio samplers, else None.
        metric_export_interval_s: Seconds between metric exports to OTLP/console.
        metric_export_timeout_s: Seconds one metric export may take.
        bsp_schedule_delay_s: Longest wait before a partial span batch is exported.
        bsp_max_queue_size: Most spans waiting for export (more are dropped, counted).
        bsp_max_export_batch_size: Most spans per export call.
        runs_dir: Directory holding one sub-directory per run.
        run_id: Run to join, or None to start a new one.
        resource_poll_interval: Seconds between resource samples; 0 means off.
        checkpoint_interval: Seconds between metric snapshots in the JSONL.
        flush_interval: Longest delay before a JSONL line reaches the disk.
        jsonl: Write the JSONL files.
        jsonl_compression: ``"none"`` or ``"zstd"`` (``*.jsonl.zst``, one frame per flush).
        console: Print a span tree to stderr at stop.
        handle_signals: Stop the telemetry on SIGTERM/SIGHUP, then hand the signal on.
        queue_size: Most events in flight on the bus.
        queue_full: What ``emit()`` does on a full bus: ``wait`` or ``drop``.
        set_global_providers: ``auto``, ``true`` or ``false``.
        capture_logs: Bridge ``logging`` records into the run.
        log_level: Lowest captured log level, as a ``logging`` number.
        capture_loggers: Logger names captured into the run (``""`` is the root).
        logs_exporters: Where captured log records go besides the run directory
            (``otlp``, ``console``); empty for none.
        otlp_logs: OTLP settings for log records (the traces' protocol, headers,
            compression and timeout; its own endpoint).
        live_port: Port of the live view, or None for none.
        live_host: Address the live view binds to.
        wait_spans: Add a ``wait <task name>`` span next to each task span.
        trace_per: ``session`` (one trace per run) or ``workflow`` (one per workflow).
    """

    enabled: bool
    service_name: str | None
    resource_attributes: dict[str, str]
    traces_exporters: tuple[str, ...]
    metrics_exporters: tuple[str, ...]
    otlp_traces: OtlpSettings
    otlp_metrics: OtlpSettings
    prometheus_host: str
    prometheus_port: int | None
    sampler: str
    sampler_arg: float | None
    metric_export_interval_s: float
    metric_export_timeout_s: float
    bsp_schedule_delay_s: float
    bsp_max_queue_size: int
    bsp_max_export_batch_size: int
    runs_dir: Path
    run_id: str | None
    resource_poll_interval: float
    checkpoint_interval: float
    flush_interval: float
    jsonl: bool
    jsonl_compression: str
    console: bool
    queue_size: int
    queue_full: QueueFull
    set_global_providers: SetGlobalProviders
    capture_logs: bool
    log_level: int
    capture_loggers: tuple[str, ...] = ()
    logs_exporters: tuple[str, ...] = ()
    otlp_logs: OtlpSettings | None = None
    live_port: int | None = None
    live_host: str = "127.0.0.1"
    wait_spans: bool = False
    trace_per: str = "session"
    handle_signals: bool = False

    def redacted(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict for ``run.json``, with secrets hidden.

        Paths become strings and tuples lists. Values of secret fields (OTLP headers) are
        replaced by ``"<redacted>"`` (their keys are kept), and so is a password in an
        endpoint URL.

        Returns:
            A new dict holding only str, int, float, bool, None, list and dict values.
        """
        return cast("dict[str, Any]", _jsonable(self, ""))


SECRET_FIELDS: Final[frozenset[str]] = frozenset(
    field for var in ENV_VARS.values() if var.secret for field in var.fields
) | {"otlp_logs.headers"}  # the traces' headers, reused for logs
"""Dotted :class:`Settings` fields whose values :meth:`Settings.redacted` hides."""


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:{REDACTED}@{netloc[2]}").geturl()


def _jsonable(value: object, path: str) -> Any:
    result: Any = value
    if path in SECRET_FIELDS:
        result = dict.fromkeys(value, REDACTED) if isinstance(value, dict) else REDACTED
    elif isinstance(value, Settings | OtlpSettings):
        prefix = f"{path}." if path else ""
        result = {f.name: _jsonable(getattr(value, f.name), prefix + f.name) for f in fields(value)}
    elif isinstance(value, Path):
        result = str(value)
    elif isinstance(value, tuple | list):
        result = [_jsonable(item, path) for item in value]
    elif isinstance(value, dict):
        result = {str(key): _jsonable(item, path) for key, item in value.items()}
    elif isinstance(value, str) and path.endswith(".endpoint"):
        result = _redact_url(value)
    return result


# ---------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Argument:
    """A keyword argument of :func:`load_settings` (and ``start_telemetry()``).

    Attributes:
        name: The keyword.
        fields: The :class:`Settings` field(s) it sets.
        env_vars: The variables it overrides.
        note: What to pass, when the field's type does not say it.
    """

    name: str
    fields: tuple[str, ...]
    env_vars: tuple[str, ...]
    note: str = ""


def _signal_vars(generic: str) -> tuple[str, ...]:
    return (
        generic,
        generic.replace("_OTLP_", "_OTLP_TRACES_"),
        generic.replace("_OTLP_", "_OTLP_METRICS_"),
    )


def _all_signal_vars(signal: Signal) -> tuple[str, ...]:
    names = [n for n in ENV_VARS if n.startswith("OTEL_EXPORTER_OTLP_")]
    other = "METRICS" if signal == "traces" else "TRACES"
    return tuple(n for n in names if f"_{other}_" not in n)


def _same(name: str, env_var: str, note: str = "") -> Argument:
    return Argument(name, (name,), (env_var,), note)


ARGUMENTS: Final[Mapping[str, Argument]] = {
    a.name: a
    for a in (
        Argument(
            "enabled",
            ("enabled",),
            (ev.OTEL_SDK_DISABLED, ev.OTELFLOW_TELEMETRY),
            "`False` turns otelflow off",
        ),
        _same("service_name", ev.OTEL_SERVICE_NAME),
        _same("resource_attributes", ev.OTEL_RESOURCE_ATTRIBUTES, "a dict or `k=v,k2=v2`"),
        Argument("traces_exporter", ("traces_exporters",), (ev.OTEL_TRACES_EXPORTER,), "a str or a list"),
        _same("traces_exporters", ev.OTEL_TRACES_EXPORTER, "same as `traces_exporter`"),
        Argument("metrics_exporter", ("metrics_exporters",), (ev.OTEL_METRICS_EXPORTER,), "a str or a list"),
        _same("metrics_exporters", ev.OTEL_METRICS_EXPORTER, "same as `metrics_exporter`"),
        Argument(
            "otlp_endpoint",
            ("otlp_traces.endpoint", "otlp_metrics.endpoint"),
            _signal_vars(ev.OTEL_EXPORTER_OTLP_ENDPOINT),
            "read as the generic endpoint (`/v1/<signal>` appended for http/protobuf); "
            "also makes `otlp` the default exporter",
        ),
        Argument(
            "otlp_protocol",
            ("otlp_traces.protocol", "otlp_metrics.protocol"),
            _signal_vars(ev.OTEL_EXPORTER_OTLP_PROTOCOL),
        ),
        Argument(
            "otlp_headers",
            ("otlp_traces.headers", "otlp_metrics.headers"),
            _signal_vars(ev.OTEL_EXPORTER_OTLP_HEADERS),
            "a dict or `k=v,k2=v2`",
        ),
        Argument(
            "otlp_traces", ("otlp_traces",), _all_signal_vars("traces"), "an `OtlpSettings`, used as is"
        ),
        Argument(
            "otlp_metrics", ("otlp_metrics",), _all_signal_vars("metrics"), "an `OtlpSettings`, used as is"
        ),
        _same("prometheus_host", ev.OTEL_EXPORTER_PROMETHEUS_HOST),
        _same(
            "prometheus_port",
            ev.OTEL_EXPORTER_PROMETHEUS_PORT,
            "also turns the Prometheus endpoint on (adds `prometheus` to the metrics exporters)",
        ),
        _same("sampler", ev.OTEL_TRACES_SAMPLER),
        _same("sampler_arg", ev.OTEL_TRACES_SAMPLER_ARG),
        _same("metric_export_interval_s", ev.OTEL_METRIC_EXPORT_INTERVAL, "seconds, not milliseconds"),
        _same("bsp_schedule_delay_s", ev.OTEL_BSP_SCHEDULE_DELAY, "seconds, not milliseconds"),
        _same("bsp_max_queue_size", ev.OTEL_BSP_MAX_QUEUE_SIZE),
        _same("bsp_max_export_batch_size", ev.OTEL_BSP_MAX_EXPORT_BATCH_SIZE),
        _same("metric_export_timeout_s", ev.OTEL_METRIC_EXPORT_TIMEOUT, "seconds, not milliseconds"),
        Argument("checkpoint_path", ("runs_dir",), (ev.OTELFLOW_RUNS_DIR,), "a str or a path"),
        _same("runs_dir", ev.OTELFLOW_RUNS_DIR, "same as `checkpoint_path`"),
        _same("run_id", ev.OTELFLOW_RUN_ID),
        _same("resource_poll_interval", ev.OTELFLOW_RESOURCE_POLL_INTERVAL),
        _same("checkpoint_interval", ev.OTELFLOW_CHECKPOINT_INTERVAL),
        _same("flush_interval", ev.OTELFLOW_FLUSH_INTERVAL),
        _same("jsonl", ev.OTELFLOW_JSONL),
        _same("jsonl_compression", ev.OTELFLOW_JSONL_COMPRESSION),
        _same("console", ev.OTELFLOW_CONSOLE),
        _same("handle_signals", ev.OTELFLOW_HANDLE_SIGNALS),
        _same("queue_size", ev.OTELFLOW_QUEUE_SIZE),
        _same("queue_full", ev.OTELFLOW_QUEUE_FULL),
        _same("set_global_providers", ev.OTELFLOW_SET_GLOBAL_PROVIDERS, "also True or False"),
        _same("capture_logs", ev.OTELFLOW_CAPTURE_LOGS),
        _same("log_level", ev.OTELFLOW_LOG_LEVEL, "a level name or `logging` number"),
        _same("capture_loggers", ev.OTELFLOW_CAPTURE_LOGGERS, "a list of names or `a,b`"),
        Argument("logs_exporter", ("logs_exporters",), (ev.OTEL_LOGS_EXPORTER,), "a str or a list"),
        _same("logs_exporters", ev.OTEL_LOGS_EXPORTER, "same as `logs_exporter`"),
        Argument(
            "otlp_logs", ("otlp_logs",), (ev.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,), "an `OtlpSettings`, used as is"
        ),
        _same("live_port", ev.OTELFLOW_LIVE_PORT, "0 picks a free port"),
        _same("live_host", ev.OTELFLOW_LIVE_HOST),
        _same("wait_spans", ev.OTELFLOW_WAIT_SPANS),
        _same("trace_per", ev.OTELFLOW_TRACE_PER),
    )
}
"""Every keyword :func:`load_settings` accepts, in documentation order."""


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


class _Loader:
    """Reads arguments and variables; every read value is checked, used or not."""

    def __init__(self, environ: Mapping[str, str], args: Mapping[str, object]) -> None:
        self.environ = environ
        self.args = args

    def arg(self, parse: Parser[T], *names: str, rule: Rule | None = None) -> T | None:
        """Parse the argument among ``names`` that was given; two given is an error."""
        given = [name for name in names if name in self.args]
        if not given:
            return None
        if len(given) > 1:
            raise ConfigError(
                f"Arguments {given[0]} and {given[1]} set the same thing: pass only one of them."
            )
        name = given[0]
        env_vars = [ENV_VARS[var] for var in ARGUMENTS[name].env_vars]
        source = Source(name, is_argument=True, secret=any(var.secret for var in env_vars))
        return parse(self.args[name], source, rule or env_vars[0].rule)

    def env(self, parse: Parser[T], name: str) -> T | None:
        """Parse variable ``name`` if it is set (non-empty), else None."""
        var = ENV_VARS[name]
        raw = var.read(self.environ)
        if raw is None:
            return None
        return parse(raw, Source(name, secret=var.secret), var.rule)

    def default(self, parse: Parser[T], name: str) -> T:
        """Parse the declared default of variable ``name``."""
        var = ENV_VARS[name]
        assert var.default is not None, name
        return parse(var.default, Source(name), var.rule)

    def env_or_default(self, parse: Parser[T], name: str) -> T:
        """Variable ``name`` if set, else its declared default."""
        return _first(self.env(parse, name), self.default(parse, name))

    def value(self, parse: Parser[T], arg: str, name: str) -> T:
        """Argument ``arg`` > variable ``name`` > its default."""
        from_env = self.env_or_default(parse, name)
        from_arg = self.arg(parse, arg)
        return from_env if from_arg is None else from_arg

    def seconds(self, name: str, *, default: bool = False) -> float | None:
        """Variable ``name`` (in its own unit, e.g. milliseconds) in seconds, or None if unset.

        With ``default``, the declared default instead of None.
        """
        number = self.env_or_default(parse_float, name) if default else self.env(parse_float, name)
        return None if number is None else number * ENV_VARS[name].scale


def _first(*values: T | None) -> T:
    for value in values:
        if value is not None:
            return value
    raise AssertionError("no value and no default")  # pragma: no cover - callers pass a default


def _sig(generic: str, signal: Signal) -> str:
    return generic.replace("_OTLP_", f"_OTLP_{signal.upper()}_")


def _append_signal_path(url: str, signal: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path=f"{parts.path.rstrip('/')}/v1/{signal}").geturl()


def _parse_otlp_settings(value: object, src: Source, rule: Rule) -> OtlpSettings:
    if not isinstance(value, OtlpSettings):
        src.fail(value, rule.expected)
    return value


def _otlp(ld: _Loader, signal: Signal) -> OtlpSettings:
    protocol = cast(
        Protocol,
        _first(
            ld.arg(parse_choice, "otlp_protocol"),
            ld.env(parse_choice, _sig(ev.OTEL_EXPORTER_OTLP_PROTOCOL, signal)),
            ld.env(parse_choice, ev.OTEL_EXPORTER_OTLP_PROTOCOL),
            ld.default(parse_choice, ev.OTEL_EXPORTER_OTLP_PROTOCOL),
        ),
    )
    from_arg = ld.arg(parse_url, "otlp_endpoint")
    own = ld.env(parse_url, _sig(ev.OTEL_EXPORTER_OTLP_ENDPOINT, signal))
    generic = ld.env(parse_url, ev.OTEL_EXPORTER_OTLP_ENDPOINT)
    if from_arg is None and own is not None:
        endpoint = own  # per-signal endpoints are used as they are
    else:
        endpoint = _first(from_arg, generic, _DEFAULT_OTLP_BASE[protocol])
        if protocol == "http/protobuf":
            endpoint = _append_signal_path(endpoint, signal)
    headers = _first(
        ld.arg(parse_mapping, "otlp_headers"),
        ld.env(parse_mapping, _sig(ev.OTEL_EXPORTER_OTLP_HEADERS, signal)),
        ld.env(parse_mapping, ev.OTEL_EXPORTER_OTLP_HEADERS),
        {},
    )
    compression = _first(
        ld.env(parse_choice, _sig(ev.OTEL_EXPORTER_OTLP_COMPRESSION, signal)),
        ld.env(parse_choice, ev.OTEL_EXPORTER_OTLP_COMPRESSION),
        ld.default(parse_choice, ev.OTEL_EXPORTER_OTLP_COMPRESSION),
    )
    timeout_s = _first(
        ld.seconds(_sig(ev.OTEL_EXPORTER_OTLP_TIMEOUT, signal)),
        ld.seconds(ev.OTEL_EXPORTER_OTLP_TIMEOUT, default=True),
    )
    own_insecure = ld.env(parse_bool, _sig(ev.OTEL_EXPORTER_OTLP_INSECURE, signal))
    generic_insecure = ld.env(parse_bool, ev.OTEL_EXPORTER_OTLP_INSECURE)
    insecure = own_insecure if own_insecure is not None else generic_insecure
    from_env = OtlpSettings(
        endpoint,
        protocol,
        headers,
        cast(Compression, compression),
        timeout_s,
        insecure,
    )
    override = ld.arg(_parse_otlp_settings, f"otlp_{signal}", rule=_OTLP_SETTINGS)
    return from_env if override is None else override


def _endpoint_given(ld: _Loader, signal: Signal) -> bool:
    names = (ev.OTEL_EXPORTER_OTLP_ENDPOINT, _sig(ev.OTEL_EXPORTER_OTLP_ENDPOINT, signal))
    return (
        "otlp_endpoint" in ld.args
        or f"otlp_{signal}" in ld.args
        or any(ENV_VARS[name].read(ld.environ) is not None for name in names)
    )


def _exporters(ld: _Loader, signal: Signal) -> tuple[str, ...]:
    var = ev.OTEL_TRACES_EXPORTER if signal == "traces" else ev.OTEL_METRICS_EXPORTER
    from_env = ld.env(parse_choices, var)
    from_arg = ld.arg(parse_choices, f"{signal}_exporter", f"{signal}_exporters")
    chosen = from_arg if from_arg is not None else from_env
    if chosen is not None:
        return chosen
    # otelflow's default is no exporter (the run directory is always written), unless an
    # OTLP endpoint is configured: then whoever set it clearly wants OTLP.
    return ("otlp",) if _endpoint_given(ld, signal) else ()


def _enabled(ld: _Loader) -> bool:
    # The argument wins; a broken switch must never stop telemetry from being switched off.
    from_arg = ld.arg(parse_bool, "enabled")
    if from_arg is not None:
        return from_arg
    own_switch = ld.env_or_default(parse_bool, ev.OTELFLOW_TELEMETRY)
    if not own_switch:
        return False
    # OTel spec: OTEL_SDK_DISABLED disables only when "true" (case-insensitive); any other
    # value leaves the SDK enabled.
    return ld.environ.get(ev.OTEL_SDK_DISABLED, "").strip().lower() != "true"


def _unknown_arguments(names: list[str]) -> ConfigError:
    hints = []
    for name in names:
        close = difflib.get_close_matches(name, ARGUMENTS, n=1)
        hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
    valid = ", ".join(sorted(ARGUMENTS))
    return ConfigError(f"Unknown argument(s) {', '.join(hints)}: the valid names are {valid}.")


def load_settings(*, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the :class:`Settings` of a session from arguments, environment and defaults.

    A non-None argument beats the environment, which beats the default; per-signal OTLP
    variables beat generic ones; empty variables count as unset. Arguments and set
    variables are all checked, even those that lose. When telemetry is disabled (by
    argument, ``OTEL_SDK_DISABLED`` or ``OTELFLOW_TELEMETRY``) the other variables are
    ignored, so that a broken configuration can always be switched off. Pure: reads only
    ``environ``; safe on any thread.

    Args:
        environ: The environment to read; ``os.environ`` when None.
        **overrides: Keyword arguments named in :data:`ARGUMENTS` (the :class:`Settings`
            field names plus the aliases ``checkpoint_path``, ``traces_exporter``,
            ``metrics_exporter``, ``otlp_endpoint``, ``otlp_protocol``, ``otlp_headers``).
            None means "not given".

    Returns:
        The validated settings.

    Raises:
        ConfigError: An unknown argument name, or a bad argument or variable value; the
            message names it, the bad value and what is accepted.
    """
    unknown = sorted(set(overrides) - set(ARGUMENTS))
    if unknown:
        raise _unknown_arguments(unknown)
    args = {name: value for name, value in overrides.items() if value is not None}
    ld = _Loader(os.environ if environ is None else environ, args)
    enabled = _enabled(ld)
    if not enabled:
        ld = _Loader({}, args)

    otlp_traces = _otlp(ld, "traces")
    otlp_metrics = _otlp(ld, "metrics")
    traces_exporters = _exporters(ld, "traces")
    metrics_exporters = _exporters(ld, "metrics")

    port_from_env = ld.env_or_default(parse_int, ev.OTEL_EXPORTER_PROMETHEUS_PORT)
    port_from_arg = ld.arg(parse_int, "prometheus_port")
    prometheus_port: int | None = None
    if port_from_arg is not None:
        prometheus_port = port_from_arg
        if "prometheus" not in metrics_exporters:
            if not metrics_exporters and ("metrics_exporter" in args or "metrics_exporters" in args):
                raise ConfigError(
                    f"Argument prometheus_port={port_from_arg!r} turns the Prometheus endpoint on "
                    "but the metrics_exporter argument says 'none': pass only one of them."
                )
            metrics_exporters = (*metrics_exporters, "prometheus")
    elif "prometheus" in metrics_exporters:
        prometheus_port = port_from_env

    sampler = ld.value(parse_choice, "sampler", ev.OTEL_TRACES_SAMPLER)
    ratio_from_arg = ld.arg(parse_float, "sampler_arg")
    sampler_arg: float | None = None
    if sampler in RATIO_SAMPLERS:
        # Only ratio samplers read the variable; others may give it another meaning.
        sampler_arg = _first(ratio_from_arg, ld.env(parse_float, ev.OTEL_TRACES_SAMPLER_ARG), 1.0)

    return Settings(
        enabled=enabled,
        service_name=_first(ld.arg(parse_str, "service_name"), ld.env(parse_str, ev.OTEL_SERVICE_NAME), "")
        or None,
        resource_attributes=_first(
            ld.arg(parse_mapping, "resource_attributes"),
            ld.env(parse_mapping, ev.OTEL_RESOURCE_ATTRIBUTES),
            {},
        ),
        traces_exporters=traces_exporters,
        metrics_exporters=metrics_exporters,
        otlp_traces=otlp_traces,
        otlp_metrics=otlp_metrics,
        prometheus_host=ld.value(parse_str, "prometheus_host", ev.OTEL_EXPORTER_PROMETHEUS_HOST),
        prometheus_port=prometheus_port,
        sampler=sampler,
        sampler_arg=sampler_arg,
        metric_export_interval_s=_first(
            ld.arg(parse_float, "metric_export_interval_s", rule=_EXPORT_SECONDS),
            ld.seconds(ev.OTEL_METRIC_EXPORT_INTERVAL, default=True),
        ),
        metric_export_timeout_s=_first(
            ld.arg(parse_float, "metric_export_timeout_s", rule=_TIMEOUT_SECONDS),
            ld.seconds(ev.OTEL_METRIC_EXPORT_TIMEOUT, default=True),
        ),
        bsp_schedule_delay_s=_first(
            ld.arg(parse_float, "bsp_schedule_delay_s", rule=_BSP_SECONDS),
            ld.seconds(ev.OTEL_BSP_SCHEDULE_DELAY, default=True),
        ),
        bsp_max_queue_size=ld.value(parse_int, "bsp_max_queue_size", ev.OTEL_BSP_MAX_QUEUE_SIZE),
        bsp_max_export_batch_size=ld.value(parse_int, "bsp_max_export_batch_size", ev.OTEL_BSP_MAX_EXPORT_BATCH_SIZE),
        runs_dir=_first(
            ld.arg(parse_path, "checkpoint_path", "runs_dir"),
            ld.env_or_default(parse_path, ev.OTELFLOW_RUNS_DIR),
        ),
        run_id=_first(ld.arg(parse_str, "run_id"), ld.env(parse_str, ev.OTELFLOW_RUN_ID), "") or None,
        resource_poll_interval=ld.value(
            parse_float, "resource_poll_interval", ev.OTELFLOW_RESOURCE_POLL_INTERVAL
        ),
        checkpoint_interval=ld.value(parse_float, "checkpoint_interval", ev.OTELFLOW_CHECKPOINT_INTERVAL),
        flush_interval=ld.value(parse_float, "flush_interval", ev.OTELFLOW_FLUSH_INTERVAL),
        jsonl=ld.value(parse_bool, "jsonl", ev.OTELFLOW_JSONL),
        jsonl_compression=ld.value(parse_choice, "jsonl_compression", ev.OTELFLOW_JSONL_COMPRESSION),
        console=ld.value(parse_bool, "console", ev.OTELFLOW_CONSOLE),
        queue_size=ld.value(parse_int, "queue_size", ev.OTELFLOW_QUEUE_SIZE),
        queue_full=cast(QueueFull, ld.value(parse_choice, "queue_full", ev.OTELFLOW_QUEUE_FULL)),
        set_global_providers=cast(
            SetGlobalProviders,
            ld.value(parse_set_global, "set_global_providers", ev.OTELFLOW_SET_GLOBAL_PROVIDERS),
        ),
        capture_logs=ld.value(parse_bool, "capture_logs", ev.OTELFLOW_CAPTURE_LOGS),
        log_level=ld.value(parse_log_level, "log_level", ev.OTELFLOW_LOG_LEVEL),
        capture_loggers=_first(
            ld.arg(_parse_names, "capture_loggers"), ld.env(_parse_names, ev.OTELFLOW_CAPTURE_LOGGERS), ()
        ),
        logs_exporters=_logs_exporters(ld),
        otlp_logs=_otlp_logs(ld, otlp_traces),
        live_port=_optional(ld.arg(parse_int, "live_port"), ld.env(parse_int, ev.OTELFLOW_LIVE_PORT)),
        live_host=ld.value(parse_str, "live_host", ev.OTELFLOW_LIVE_HOST),
        wait_spans=ld.value(parse_bool, "wait_spans", ev.OTELFLOW_WAIT_SPANS),
        trace_per=ld.value(parse_choice, "trace_per", ev.OTELFLOW_TRACE_PER),
        handle_signals=ld.value(parse_bool, "handle_signals", ev.OTELFLOW_HANDLE_SIGNALS),
    )


def _optional(*values: T | None) -> T | None:
    return next((v for v in values if v is not None), None)


def _parse_names(value: object, src: Source, rule: Rule) -> tuple[str, ...]:
    """Logger names: ``"a,b"`` or a list of strings; ``root`` (or ``""`` in a list) is the root."""
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, str) for v in value):
            src.fail(value, "a list of logger names (strings)")
        names = [v.strip() for v in value]
    else:
        names = [n.strip() for n in parse_str(value, src, rule).split(",")]
    return tuple("" if n in ("root", "") else n for n in names)


def _logs_exporters(ld: _Loader) -> tuple[str, ...]:
    from_env = ld.env(parse_choices, ev.OTEL_LOGS_EXPORTER)
    from_arg = ld.arg(parse_choices, "logs_exporter", "logs_exporters")
    chosen = from_arg if from_arg is not None else from_env
    if chosen is not None:
        return chosen
    given = "otlp_endpoint" in ld.args or any(
        ENV_VARS[n].read(ld.environ) is not None
        for n in (ev.OTEL_EXPORTER_OTLP_ENDPOINT, ev.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT)
    )
    return ("otlp",) if given else ()


def _otlp_logs(ld: _Loader, traces: OtlpSettings) -> OtlpSettings:
    override = ld.arg(_parse_otlp_settings, "otlp_logs", rule=_OTLP_SETTINGS)
    if override is not None:
        return override
    own = ld.env(parse_url, ev.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT)
    if own is not None and ld.arg(parse_url, "otlp_endpoint") is None:
        endpoint = own
    else:
        generic = _first(ld.arg(parse_url, "otlp_endpoint"), ld.env(parse_url, ev.OTEL_EXPORTER_OTLP_ENDPOINT),
                         _DEFAULT_OTLP_BASE[traces.protocol])
        endpoint = _append_signal_path(generic, "logs") if traces.protocol == "http/protobuf" else generic
    return OtlpSettings(endpoint, traces.protocol, traces.headers, traces.compression, traces.timeout_s,
                        traces.insecure)
