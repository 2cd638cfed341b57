"""Every numeric setting has a documented sane range and a clear ConfigError outside it
(issue 18, found item 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelflow.config import env as ev
from otelflow.config import load_settings
from otelflow.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTELFLOW_CHECKPOINT_INTERVAL", "1e300"),
        ("OTELFLOW_CHECKPOINT_INTERVAL", "1e-9"),
        ("OTELFLOW_FLUSH_INTERVAL", "1e-9"),
        ("OTELFLOW_RESOURCE_POLL_INTERVAL", "1e-9"),
        ("OTELFLOW_RESOURCE_POLL_INTERVAL", "1e300"),
        ("OTELFLOW_QUEUE_SIZE", "1e20"),
        ("OTELFLOW_QUEUE_SIZE", "100000000000000000000"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1e-9"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1e300"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1e300"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "0.0001"),
        ("OTEL_METRIC_EXPORT_TIMEOUT", "inf"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "70000"),
        ("OTEL_TRACES_SAMPLER_ARG", "2"),
    ],
)
def test_absurd_numbers_are_a_config_error_naming_the_variable_and_the_range(name, value):
    with pytest.raises(ConfigError) as err:
        load_settings(environ={name: value, "OTEL_TRACES_SAMPLER": "traceidratio"})
    msg = str(err.value)
    assert msg.startswith(f"{name}={value!r} is not valid")
    assert "expected" in msg and any(c.isdigit() for c in msg.split("expected", 1)[1])


@pytest.mark.parametrize(
    ("kwarg", "value"),
    [
        ("checkpoint_interval", 1e300),
        ("flush_interval", 1e-9),
        ("resource_poll_interval", 1e-9),
        ("queue_size", 10**20),
        ("metric_export_interval_s", 1e-9),
    ],
)
def test_absurd_arguments_are_refused_too(kwarg, value):
    with pytest.raises(ConfigError, match=f"Argument {kwarg}="):
        load_settings(environ={}, **{kwarg: value})


def test_zero_still_turns_the_resource_monitor_off():
    assert load_settings(environ={"OTELFLOW_RESOURCE_POLL_INTERVAL": "0"}).resource_poll_interval == 0


def test_every_numeric_variable_has_both_bounds():
    numeric = [v for v in ev.ENV_VARS.values() if v.kind in ("int", "float")]
    assert numeric
    for var in numeric:
        assert var.rule.low is not None and var.rule.high is not None, var.name


def test_the_ranges_are_in_the_rendered_configuration_page():
    from otelflow.config.render import render

    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == render()
    assert "from 0.01 to 60" in page and "from 1024 to 16777216" in page
