"""load_settings(): every variable, precedence, OTLP resolution, exporters, redaction."""

from __future__ import annotations

import dataclasses
import json
import logging
from functools import reduce
from pathlib import Path

import pytest

from otelflow.config import ENV_VARS, OtlpSettings, Settings, load_settings
from otelflow.errors import ConfigError

HTTP = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
PROMETHEUS = {"OTEL_METRICS_EXPORTER": "prometheus"}
RATIO = {"OTEL_TRACES_SAMPLER": "traceidratio"}


def attr(settings: Settings, dotted: str) -> object:
    return reduce(getattr, dotted.split("."), settings)


# --- defaults --------------------------------------------------------------------------


def test_defaults_with_an_empty_environment() -> None:
    s = load_settings(environ={})
    assert s.enabled is True
    assert s.service_name is None and s.resource_attributes == {}
    assert s.traces_exporters == () and s.metrics_exporters == ()
    assert s.otlp_traces == OtlpSettings("http://localhost:4317", "grpc", {}, "none", 10.0, None)
    assert s.otlp_metrics == OtlpSettings("http://localhost:4317", "grpc", {}, "none", 10.0, None)
    assert s.prometheus_host == "127.0.0.1" and s.prometheus_port is None
    assert s.sampler == "parentbased_always_on" and s.sampler_arg is None
    assert (s.metric_export_interval_s, s.metric_export_timeout_s) == (60.0, 30.0)
    assert s.runs_dir == Path(".otelflow/runs") and s.run_id is None
    assert (s.resource_poll_interval, s.checkpoint_interval, s.flush_interval) == (5.0, 10.0, 0.25)
    assert (s.jsonl, s.console, s.capture_logs) == (True, False, False)
    assert (s.queue_size, s.queue_full) == (65536, "wait")
    assert s.set_global_providers == "auto"
    assert s.log_level == logging.INFO


def test_settings_are_immutable() -> None:
    s = load_settings(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.queue_size = 1  # type: ignore[misc]


# --- every variable: a valid value takes effect ----------------------------------------

VALID: list[tuple[str, str, dict[str, str], str, object]] = [
    ("OTEL_SDK_DISABLED", "true", {}, "enabled", False),
    ("OTELFLOW_TELEMETRY", "off", {}, "enabled", False),
    ("OTEL_SERVICE_NAME", "etl", {}, "service_name", "etl"),
    (
        "OTEL_RESOURCE_ATTRIBUTES",
        "team=data,site=a%20b",
        {},
        "resource_attributes",
        {"team": "data", "site": "a b"},
    ),
    ("OTEL_TRACES_EXPORTER", "console,otlp", {}, "traces_exporters", ("console", "otlp")),
    ("OTEL_METRICS_EXPORTER", "prometheus,console", {}, "metrics_exporters", ("prometheus", "console")),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://col:4317", {}, "otlp_traces.endpoint", "https://col:4317"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/t", {}, "otlp_traces.endpoint", "http://c:4318/t"),
    (
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "http://c:4318/m",
        {},
        "otlp_metrics.endpoint",
        "http://c:4318/m",
    ),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", {}, "otlp_metrics.protocol", "http/protobuf"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "HTTP/Protobuf", {}, "otlp_traces.protocol", "http/protobuf"),
    ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf", {}, "otlp_metrics.protocol", "http/protobuf"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=abc", {}, "otlp_traces.headers", {"api-key": "abc"}),
    ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "a=1", {}, "otlp_traces.headers", {"a": "1"}),
    ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "a=2", {}, "otlp_metrics.headers", {"a": "2"}),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip", {}, "otlp_metrics.compression", "gzip"),
    ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "GZIP", {}, "otlp_traces.compression", "gzip"),
    ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip", {}, "otlp_metrics.compression", "gzip"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500", {}, "otlp_traces.timeout_s", 2.5),
    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "500", {}, "otlp_traces.timeout_s", 0.5),
    ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "1", {}, "otlp_metrics.timeout_s", 0.001),
    ("OTEL_EXPORTER_OTLP_INSECURE", "true", {}, "otlp_metrics.insecure", True),
    ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "false", {}, "otlp_traces.insecure", False),
    ("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "1", {}, "otlp_metrics.insecure", True),
    ("OTEL_EXPORTER_PROMETHEUS_HOST", "0.0.0.0", {}, "prometheus_host", "0.0.0.0"),
    ("OTEL_EXPORTER_PROMETHEUS_PORT", "9000", PROMETHEUS, "prometheus_port", 9000),
    ("OTEL_TRACES_SAMPLER", "always_off", {}, "sampler", "always_off"),
    ("OTEL_TRACES_SAMPLER_ARG", "0.25", RATIO, "sampler_arg", 0.25),
    ("OTEL_METRIC_EXPORT_INTERVAL", "1500", {}, "metric_export_interval_s", 1.5),
    ("OTEL_METRIC_EXPORT_TIMEOUT", "500", {}, "metric_export_timeout_s", 0.5),
    ("OTEL_BSP_SCHEDULE_DELAY", "250", {}, "bsp_schedule_delay_s", 0.25),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "100", {}, "bsp_max_queue_size", 100),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64", {}, "bsp_max_export_batch_size", 64),
    ("OTELFLOW_RUNS_DIR", "/data/runs", {}, "runs_dir", Path("/data/runs")),
    ("OTELFLOW_RUN_ID", "run-1.a_b", {}, "run_id", "run-1.a_b"),
    ("OTELFLOW_RESOURCE_POLL_INTERVAL", "0", {}, "resource_poll_interval", 0.0),
    ("OTELFLOW_CHECKPOINT_INTERVAL", "2.5", {}, "checkpoint_interval", 2.5),
    ("OTELFLOW_FLUSH_INTERVAL", "60", {}, "flush_interval", 60.0),
    ("OTELFLOW_JSONL", "no", {}, "jsonl", False),
    ("OTELFLOW_WAIT_SPANS", "yes", {}, "wait_spans", True),
    ("OTELFLOW_TRACE_PER", "Workflow", {}, "trace_per", "workflow"),
    ("OTELFLOW_JSONL_COMPRESSION", "ZSTD", {}, "jsonl_compression", "zstd"),
    ("OTELFLOW_CONSOLE", "YES", {}, "console", True),
    ("OTELFLOW_HANDLE_SIGNALS", "1", {}, "handle_signals", True),
    ("OTELFLOW_QUEUE_SIZE", "1024", {}, "queue_size", 1024),
    ("OTELFLOW_QUEUE_FULL", "drop", {}, "queue_full", "drop"),
    ("OTELFLOW_SET_GLOBAL_PROVIDERS", "false", {}, "set_global_providers", "false"),
    ("OTELFLOW_CAPTURE_LOGS", "1", {}, "capture_logs", True),
    ("OTELFLOW_LOG_LEVEL", "debug", {}, "log_level", logging.DEBUG),
    ("OTELFLOW_CAPTURE_LOGGERS", "myapp, parsl,root", {}, "capture_loggers", ("myapp", "parsl", "")),
    ("OTEL_LOGS_EXPORTER", "console", {}, "logs_exporters", ("console",)),
    ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://c:4318/l", {}, "otlp_logs.endpoint", "http://c:4318/l"),
    ("OTELFLOW_LIVE_PORT", "8765", {}, "live_port", 8765),
    ("OTELFLOW_LIVE_HOST", "0.0.0.0", {}, "live_host", "0.0.0.0"),
]


@pytest.mark.parametrize(("var", "value", "extra", "field", "expected"), VALID, ids=[v[0] for v in VALID])
def test_a_valid_value_takes_effect(
    var: str, value: str, extra: dict[str, str], field: str, expected: object
) -> None:
    assert attr(load_settings(environ={**extra, var: value}), field) == expected


def test_every_variable_has_a_valid_value_test() -> None:
    assert {row[0] for row in VALID} == set(ENV_VARS)


# --- every variable: an invalid value raises, naming the variable and the value --------

INVALID: list[tuple[str, str, dict[str, str]]] = [
    ("OTELFLOW_TELEMETRY", "2", {}),
    ("OTEL_RESOURCE_ATTRIBUTES", "team", {}),
    ("OTEL_TRACES_EXPORTER", "jaeger", {}),
    ("OTEL_TRACES_EXPORTER", "otlp,none", {}),
    ("OTEL_METRICS_EXPORTER", "zipkin", {}),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317", {}),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://host", {}),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://", {}),
    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://host:99999", {}),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", {}),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpcs", {}),
    ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http", {}),
    ("OTEL_EXPORTER_OTLP_HEADERS", "token-s3cret", {}),
    ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "=s3cret", {}),
    ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "bad key=s3cret", {}),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli", {}),
    ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd", {}),
    ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "yes", {}),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "0", {}),
    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10s", {}),
    ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "-5", {}),
    ("OTEL_EXPORTER_OTLP_INSECURE", "sometimes", {}),
    ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "2", {}),
    ("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "maybe", {}),
    ("OTEL_EXPORTER_PROMETHEUS_HOST", "http://host", {}),
    ("OTEL_EXPORTER_PROMETHEUS_PORT", "65536", {}),
    ("OTEL_EXPORTER_PROMETHEUS_PORT", "-1", PROMETHEUS),
    ("OTEL_TRACES_SAMPLER", "ratio", {}),
    ("OTEL_TRACES_SAMPLER_ARG", "1.5", RATIO),
    ("OTEL_TRACES_SAMPLER_ARG", "half", {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}),
    ("OTEL_METRIC_EXPORT_INTERVAL", "0", {}),
    ("OTEL_METRIC_EXPORT_TIMEOUT", "fast", {}),
    ("OTEL_BSP_SCHEDULE_DELAY", "0", {}),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "1e20", {}),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-5", {}),
    ("OTELFLOW_RUN_ID", "../escape", {}),
    ("OTELFLOW_RUN_ID", "..", {}),
    ("OTELFLOW_RESOURCE_POLL_INTERVAL", "-1", {}),
    ("OTELFLOW_CHECKPOINT_INTERVAL", "0", {}),
    ("OTELFLOW_CHECKPOINT_INTERVAL", "inf", {}),
    ("OTELFLOW_FLUSH_INTERVAL", "abc", {}),
    ("OTELFLOW_FLUSH_INTERVAL", "61", {}),
    ("OTELFLOW_FLUSH_INTERVAL", "nan", {}),
    ("OTELFLOW_JSONL", "yep", {}),
    ("OTELFLOW_WAIT_SPANS", "sometimes", {}),
    ("OTELFLOW_TRACE_PER", "task", {}),
    ("OTELFLOW_JSONL_COMPRESSION", "gzip", {}),
    ("OTELFLOW_CONSOLE", "2", {}),
    ("OTELFLOW_HANDLE_SIGNALS", "maybe", {}),
    ("OTELFLOW_QUEUE_SIZE", "1023", {}),
    ("OTELFLOW_QUEUE_SIZE", "1.5e4", {}),
    ("OTELFLOW_QUEUE_FULL", "block", {}),
    ("OTELFLOW_SET_GLOBAL_PROVIDERS", "sometimes", {}),
    ("OTELFLOW_CAPTURE_LOGS", "enable", {}),
    ("OTELFLOW_LOG_LEVEL", "TRACE", {}),
    ("OTELFLOW_CAPTURE_LOGGERS", "my app", {}),
    ("OTEL_LOGS_EXPORTER", "loki", {}),
    ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "col:4318", {}),
    ("OTELFLOW_LIVE_PORT", "65536", {}),
    ("OTELFLOW_LIVE_HOST", "http://host", {}),
]
# any non-empty text is accepted; OTEL_SDK_DISABLED: only "true" disables (OTel spec)
NO_INVALID_VALUE = {"OTEL_SERVICE_NAME", "OTELFLOW_RUNS_DIR", "OTEL_SDK_DISABLED"}


@pytest.mark.parametrize(("var", "bad", "extra"), INVALID, ids=[f"{v[0]}={v[1]}" for v in INVALID])
def test_an_invalid_value_raises_naming_variable_and_value(var: str, bad: str, extra: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={**extra, var: bad})
    message = str(info.value)
    assert message.startswith(var)
    assert "expected" in message and message.endswith(".")
    if ENV_VARS[var].secret:
        assert "s3cret" not in message and "hidden" in message
    else:
        assert f"{var}={bad!r}" in message


def test_every_variable_that_can_be_wrong_has_an_invalid_value_test() -> None:
    assert {row[0] for row in INVALID} == set(ENV_VARS) - NO_INVALID_VALUE


@pytest.mark.parametrize("var", list(ENV_VARS))
def test_an_empty_variable_counts_as_unset(var: str) -> None:
    assert load_settings(environ={var: ""}) == load_settings(environ={})


def test_a_losing_value_is_still_checked() -> None:
    env = {"OTELFLOW_FLUSH_INTERVAL": "abc"}
    with pytest.raises(ConfigError, match="OTELFLOW_FLUSH_INTERVAL='abc'"):
        load_settings(environ=env, flush_interval=1.0)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "nope", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1"}
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT='nope'"):
        load_settings(environ=env)


# --- arguments ---------------------------------------------------------------------------


def test_argument_beats_environment_beats_default() -> None:
    env = {"OTELFLOW_FLUSH_INTERVAL": "2", "OTEL_SERVICE_NAME": "from-env"}
    assert load_settings(environ={}).flush_interval == 0.25
    assert load_settings(environ=env).flush_interval == 2.0
    assert load_settings(environ=env, flush_interval=3).flush_interval == 3.0
    assert load_settings(environ=env, service_name="from-arg").service_name == "from-arg"


def test_a_none_argument_means_not_given() -> None:
    env = {"OTELFLOW_QUEUE_SIZE": "2048"}
    assert load_settings(environ=env, queue_size=None, checkpoint_path=None).queue_size == 2048


def test_arguments_take_python_values() -> None:
    s = load_settings(
        environ={},
        checkpoint_path=Path("/tmp/runs"),
        traces_exporter=["console"],
        metrics_exporter="otlp",
        otlp_headers={"Authorization": "Bearer x"},
        resource_attributes={"team": "data"},
        jsonl=False,
        log_level=logging.WARNING,
        set_global_providers=True,
        metric_export_interval_s=5,
    )
    assert s.runs_dir == Path("/tmp/runs")
    assert s.traces_exporters == ("console",) and s.metrics_exporters == ("otlp",)
    assert s.otlp_traces.headers == {"authorization": "Bearer x"}
    assert s.resource_attributes == {"team": "data"}
    assert s.jsonl is False and s.log_level == logging.WARNING
    assert s.set_global_providers == "true"
    assert s.metric_export_interval_s == 5.0


def test_millisecond_variables_become_seconds_but_arguments_are_seconds() -> None:
    env = {"OTEL_METRIC_EXPORT_INTERVAL": "5000"}
    assert load_settings(environ=env).metric_export_interval_s == 5.0
    assert load_settings(environ=env, metric_export_interval_s=0.5).metric_export_interval_s == 0.5


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"flush_interval": 0}, "Argument flush_interval=0"),
        ({"flush_interval": "abc"}, "Argument flush_interval='abc'"),
        ({"queue_size": True}, "Argument queue_size=True"),
        ({"queue_size": 100}, "Argument queue_size=100"),
        ({"traces_exporter": ["otlp", "jaeger"]}, "Argument traces_exporter=['otlp', 'jaeger']"),
        ({"metrics_exporters": 3}, "Argument metrics_exporters=3"),
        ({"otlp_endpoint": "collector:4317"}, "Argument otlp_endpoint='collector:4317'"),
        ({"otlp_protocol": "udp"}, "Argument otlp_protocol='udp'"),
        ({"prometheus_port": 70000}, "Argument prometheus_port=70000"),
        ({"prometheus_host": "a b"}, "Argument prometheus_host='a b'"),
        ({"log_level": 15}, "Argument log_level=15"),
        ({"sampler": "sometimes"}, "Argument sampler='sometimes'"),
        ({"sampler_arg": 2.0}, "Argument sampler_arg=2.0"),
        ({"run_id": ".."}, "Argument run_id='..'"),
        ({"checkpoint_path": 123}, "Argument checkpoint_path=123"),
        ({"service_name": 5}, "Argument service_name=5"),
        ({"jsonl": "maybe"}, "Argument jsonl='maybe'"),
        ({"enabled": "maybe"}, "Argument enabled='maybe'"),
        ({"metric_export_interval_s": 0}, "Argument metric_export_interval_s=0"),
        ({"metric_export_timeout_s": -1}, "Argument metric_export_timeout_s=-1"),
        ({"resource_attributes": {"a": 1}}, "Argument resource_attributes={'a': 1}"),
        ({"set_global_providers": "sometimes"}, "Argument set_global_providers='sometimes'"),
        ({"queue_full": "block"}, "Argument queue_full='block'"),
        ({"capture_logs": 1}, "Argument capture_logs=1"),
        ({"console": "loud"}, "Argument console='loud'"),
        ({"resource_poll_interval": -0.5}, "Argument resource_poll_interval=-0.5"),
        ({"checkpoint_interval": 0}, "Argument checkpoint_interval=0"),
    ],
)
def test_a_bad_argument_raises_naming_the_argument_and_value(kwargs: dict[str, object], shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, **kwargs)
    assert str(info.value).startswith(f"{shown} is not valid")


def test_a_bad_secret_argument_hides_its_value() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, otlp_headers="Bearer s3cret")
    assert "otlp_headers" in str(info.value) and "s3cret" not in str(info.value)


def test_a_full_otlp_settings_argument_must_be_otlp_settings() -> None:
    with pytest.raises(ConfigError, match="expected an OtlpSettings instance"):
        load_settings(environ={}, otlp_traces={"endpoint": "http://x:1"})


def test_unknown_argument_names_raise_listing_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, flush_intervall=1, colour=True)
    message = str(info.value)
    assert "colour" in message and "flush_intervall (did you mean flush_interval?)" in message
    assert "checkpoint_path" in message and "queue_full" in message


def test_an_alias_and_its_field_together_is_an_error() -> None:
    with pytest.raises(ConfigError, match="checkpoint_path and runs_dir"):
        load_settings(environ={}, checkpoint_path="a", runs_dir="b")
    with pytest.raises(ConfigError, match="traces_exporter and traces_exporters"):
        load_settings(environ={}, traces_exporter="otlp", traces_exporters="console")


# --- switching off -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({}, True),
        ({"OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_SDK_DISABLED": "maybe"}, True),  # OTel spec: only "true" disables
        ({"OTEL_SDK_DISABLED": " TRUE "}, False),
        ({"OTELFLOW_TELEMETRY": "0"}, False),
        ({"OTELFLOW_TELEMETRY": "off"}, False),
        ({"OTELFLOW_TELEMETRY": "on", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_either_switch_turns_telemetry_off(env: dict[str, str], enabled: bool) -> None:
    assert load_settings(environ=env).enabled is enabled


def test_enabled_argument_beats_both_switches() -> None:
    assert load_settings(environ={"OTEL_SDK_DISABLED": "true"}, enabled=True).enabled is True
    assert load_settings(environ={}, enabled=False).enabled is False


def test_when_off_other_variables_are_ignored_so_bad_config_can_be_switched_off() -> None:
    env = {"OTEL_SDK_DISABLED": "true", "OTELFLOW_FLUSH_INTERVAL": "abc", "OTEL_TRACES_EXPORTER": "otlp"}
    s = load_settings(environ=env)
    assert s.enabled is False and s.flush_interval == 0.25 and s.traces_exporters == ()
    with pytest.raises(ConfigError, match="Argument flush_interval"):
        load_settings(environ=env, flush_interval="abc")


# --- OTLP: per-signal beats generic, /v1/<signal> appending --------------------------------


def test_per_signal_variables_beat_generic_ones() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://generic:4317",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4317",
        "OTEL_EXPORTER_OTLP_HEADERS": "who=generic",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "who=metrics",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "2000",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "false",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
    }
    s = load_settings(environ=env)
    assert s.otlp_traces == OtlpSettings("http://traces:4317", "grpc", {"who": "generic"}, "none", 1.0, False)
    assert s.otlp_metrics == OtlpSettings(
        "http://generic:4317/v1/metrics", "http/protobuf", {"who": "metrics"}, "gzip", 2.0, True
    )


def test_per_signal_headers_replace_generic_headers_rather_than_merge() -> None:
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=2", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "c=3"}
    assert load_settings(environ=env).otlp_traces.headers == {"c": "3"}


@pytest.mark.parametrize(
    ("generic", "traces", "metrics"),
    [
        ("http://col:4318", "http://col:4318/v1/traces", "http://col:4318/v1/metrics"),
        ("http://col:4318/", "http://col:4318/v1/traces", "http://col:4318/v1/metrics"),
        (
            "https://gw.example/otel",
            "https://gw.example/otel/v1/traces",
            "https://gw.example/otel/v1/metrics",
        ),
    ],
)
def test_http_appends_the_signal_path_to_the_generic_endpoint(
    generic: str, traces: str, metrics: str
) -> None:
    s = load_settings(environ={**HTTP, "OTEL_EXPORTER_OTLP_ENDPOINT": generic})
    assert (s.otlp_traces.endpoint, s.otlp_metrics.endpoint) == (traces, metrics)


def test_per_signal_endpoints_are_used_as_they_are() -> None:
    env = {**HTTP, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://col:4318/custom"}
    assert load_settings(environ=env).otlp_traces.endpoint == "http://col:4318/custom"


def test_grpc_uses_the_generic_endpoint_as_it_is() -> None:
    s = load_settings(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://col:4317"})
    assert s.otlp_traces.endpoint == s.otlp_metrics.endpoint == "http://col:4317"


def test_default_endpoints_depend_on_the_protocol() -> None:
    s = load_settings(environ=HTTP)
    assert s.otlp_traces.endpoint == "http://localhost:4318/v1/traces"
    assert s.otlp_metrics.endpoint == "http://localhost:4318/v1/metrics"
    assert load_settings(environ={}).otlp_traces.endpoint == "http://localhost:4317"


def test_endpoint_argument_acts_as_generic_endpoint_and_beats_per_signal_variables() -> None:
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/x"}
    s = load_settings(environ=env, otlp_endpoint="http://arg:4318", otlp_protocol="http/protobuf")
    assert s.otlp_traces.endpoint == "http://arg:4318/v1/traces"
    assert s.otlp_metrics.endpoint == "http://arg:4318/v1/metrics"


def test_a_full_otlp_settings_argument_is_used_as_it_is() -> None:
    mine = OtlpSettings("https://x:443/v1/traces", "http/protobuf", {}, "gzip", 3.0, None)
    s = load_settings(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4317"}, otlp_traces=mine)
    assert s.otlp_traces is mine and s.otlp_metrics.endpoint == "http://env:4317"


# --- exporters -----------------------------------------------------------------------------


def test_no_exporter_by_default_because_the_run_directory_is_always_written() -> None:
    s = load_settings(environ={})
    assert (s.traces_exporters, s.metrics_exporters) == ((), ())


def test_a_generic_endpoint_makes_otlp_the_default_for_both_signals() -> None:
    s = load_settings(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://col:4317"})
    assert (s.traces_exporters, s.metrics_exporters) == (("otlp",), ("otlp",))


def test_a_per_signal_endpoint_makes_otlp_the_default_for_that_signal_only() -> None:
    s = load_settings(environ={"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://col:4317"})
    assert (s.traces_exporters, s.metrics_exporters) == ((), ("otlp",))


def test_an_explicit_exporter_wins_over_the_endpoint_switch() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://col:4317", "OTEL_TRACES_EXPORTER": "none"}
    s = load_settings(environ=env)
    assert (s.traces_exporters, s.metrics_exporters) == ((), ("otlp",))
    assert load_settings(environ=env, traces_exporter="console").traces_exporters == ("console",)


def test_the_endpoint_argument_also_switches_the_default_to_otlp() -> None:
    s = load_settings(environ={}, otlp_endpoint="http://col:4317")
    assert (s.traces_exporters, s.metrics_exporters) == (("otlp",), ("otlp",))


def test_none_combined_with_another_exporter_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        load_settings(environ={}, metrics_exporter=["none", "console"])


# --- Prometheus ----------------------------------------------------------------------------


def test_prometheus_exporter_opens_the_endpoint_on_the_default_or_configured_port() -> None:
    assert load_settings(environ=PROMETHEUS).prometheus_port == 9464
    env = {**PROMETHEUS, "OTEL_EXPORTER_PROMETHEUS_PORT": "9100"}
    assert load_settings(environ=env).prometheus_port == 9100


def test_a_port_variable_alone_opens_no_endpoint() -> None:
    assert load_settings(environ={"OTEL_EXPORTER_PROMETHEUS_PORT": "9100"}).prometheus_port is None


def test_the_port_argument_turns_prometheus_on() -> None:
    s = load_settings(environ={"OTEL_METRICS_EXPORTER": "otlp"}, prometheus_port=0)
    assert s.prometheus_port == 0 and s.metrics_exporters == ("otlp", "prometheus")
    s = load_settings(environ={"OTEL_METRICS_EXPORTER": "none"}, prometheus_port=9200)
    assert s.prometheus_port == 9200 and s.metrics_exporters == ("prometheus",)


def test_the_port_argument_with_a_none_exporter_argument_is_an_error() -> None:
    with pytest.raises(ConfigError, match="prometheus_port=9200"):
        load_settings(environ={}, prometheus_port=9200, metrics_exporter="none")


# --- sampling ------------------------------------------------------------------------------


def test_ratio_samplers_default_to_a_ratio_of_one() -> None:
    assert load_settings(environ=RATIO).sampler_arg == 1.0
    assert load_settings(environ={}, sampler="traceidratio", sampler_arg=0.1).sampler_arg == 0.1


def test_other_samplers_ignore_the_sampler_argument_variable() -> None:
    s = load_settings(environ={"OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_SAMPLER_ARG": "not-a-ratio"})
    assert s.sampler == "always_on" and s.sampler_arg is None


# --- logs and globals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "level"),
    [("DEBUG", 10), ("info", 20), ("Warning", 30), ("error", 40), ("CRITICAL", 50)],
)
def test_log_level_names_become_logging_numbers(word: str, level: int) -> None:
    assert load_settings(environ={"OTELFLOW_LOG_LEVEL": word}).log_level == level


@pytest.mark.parametrize(
    ("word", "value"), [("AUTO", "auto"), ("yes", "true"), ("0", "false"), ("on", "true")]
)
def test_set_global_providers_also_reads_boolean_words(word: str, value: str) -> None:
    assert load_settings(environ={"OTELFLOW_SET_GLOBAL_PROVIDERS": word}).set_global_providers == value


# --- redaction -------------------------------------------------------------------------------


def test_redacted_is_json_ready_and_hides_secrets() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20s3cret",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-api-key=s3cret",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://user:s3cret@col:4317",
        "OTEL_RESOURCE_ATTRIBUTES": "team=data",
        "OTEL_TRACES_EXPORTER": "console",
    }
    s = load_settings(environ=env, checkpoint_path=Path("/tmp/runs"))
    data = s.redacted()
    text = json.dumps(data)
    assert "s3cret" not in text
    assert data["otlp_traces"]["headers"] == {"x-api-key": "<redacted>"}
    assert data["otlp_metrics"]["headers"] == {"authorization": "<redacted>"}
    assert data["otlp_metrics"]["endpoint"] == "https://user:<redacted>@col:4317"
    assert data["runs_dir"] == "/tmp/runs"
    assert data["traces_exporters"] == ["console"]
    assert data["resource_attributes"] == {"team": "data"}
    assert set(data) == {f.name for f in dataclasses.fields(Settings)}


def test_redacted_leaves_the_settings_untouched() -> None:
    s = load_settings(environ={"OTEL_EXPORTER_OTLP_HEADERS": "k=v"})
    s.redacted()
    assert s.otlp_traces.headers == {"k": "v"}


def test_a_broken_switch_never_blocks_switching_off():
    assert load_settings(environ={"OTELFLOW_TELEMETRY": "false", "OTEL_SDK_DISABLED": "maybe"}).enabled is False
    assert load_settings(environ={"OTEL_SDK_DISABLED": "maybe"}, enabled=False).enabled is False


def test_a_home_directory_that_cannot_be_expanded_is_a_config_error():
    with pytest.raises(ConfigError, match="OTELFLOW_RUNS_DIR"):
        load_settings(environ={"OTELFLOW_RUNS_DIR": "~no-such-user-otelflow/x"})
