"""The variable table, its parsers, and the documentation rendered from them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from otelflow.config import env
from otelflow.config.env import (
    ENV_VARS,
    GROUPS,
    Rule,
    Source,
    parse_bool,
    parse_choices,
    parse_float,
    parse_int,
    parse_mapping,
    parse_path,
    parse_str,
    parse_url,
)
from otelflow.config.render import render
from otelflow.config.settings import ARGUMENTS, OtlpSettings, Settings, load_settings
from otelflow.errors import ConfigError

DOCS = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
SETTINGS_FIELDS = {f.name for f in dataclasses.fields(Settings)}
OTLP_FIELDS = {f.name for f in dataclasses.fields(OtlpSettings)}

# --- the table -------------------------------------------------------------------------


def test_every_variable_has_a_module_constant_holding_its_name() -> None:
    constants = {
        name: value
        for name, value in vars(env).items()
        if name.startswith(("OTEL_", "OTELFLOW_")) and isinstance(value, str)
    }
    assert constants == {name: name for name in ENV_VARS}


def test_variable_prefixes_are_otel_standard_or_otelflow_own() -> None:
    for var in ENV_VARS.values():
        assert var.is_otel == var.name.startswith("OTEL_")
        assert var.name.startswith(("OTEL_", "OTELFLOW_"))


@pytest.mark.parametrize("var", ENV_VARS.values(), ids=list(ENV_VARS))
def test_every_variable_is_fully_documented(var: env.EnvVar) -> None:
    assert var.group in GROUPS
    assert var.meaning.strip() and var.accepted.strip() and var.default_text.strip()
    assert var.fields, "every variable feeds at least one Settings field"
    for field in var.fields:
        top, _, nested = field.partition(".")
        assert top in SETTINGS_FIELDS
        if nested:
            assert nested in OTLP_FIELDS


@pytest.mark.parametrize("var", [v for v in ENV_VARS.values() if v.default is not None], ids=lambda v: v.name)
def test_every_declared_default_is_itself_valid(var: env.EnvVar) -> None:
    assert var.default is not None
    assert load_settings(environ={var.name: var.default}) == load_settings(environ={})


def test_only_otlp_headers_are_secret() -> None:
    secret = {name for name, var in ENV_VARS.items() if var.secret}
    assert secret == {
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    }


def test_empty_or_blank_variable_reads_as_unset() -> None:
    var = ENV_VARS["OTELFLOW_FLUSH_INTERVAL"]
    assert var.read({}) is None
    assert var.read({"OTELFLOW_FLUSH_INTERVAL": ""}) is None
    assert var.read({"OTELFLOW_FLUSH_INTERVAL": "   "}) is None
    assert var.read({"OTELFLOW_FLUSH_INTERVAL": " 0.5 "}) == "0.5"


def test_every_settings_field_can_be_set_by_an_argument() -> None:
    set_by_arguments = {field.partition(".")[0] for arg in ARGUMENTS.values() for field in arg.fields}
    assert set_by_arguments == SETTINGS_FIELDS
    assert set(ARGUMENTS) >= SETTINGS_FIELDS
    for arg in ARGUMENTS.values():
        assert set(arg.env_vars) <= set(ENV_VARS)


# --- parsers -----------------------------------------------------------------------------

BOOL = Rule("bool", "a boolean")
SRC = Source("OTELFLOW_X")


@pytest.mark.parametrize("word", ["true", "TRUE", "1", "yes", "On", " true "])
def test_bool_accepts_true_spellings(word: str) -> None:
    assert parse_bool(word, SRC, BOOL) is True


@pytest.mark.parametrize("word", ["false", "False", "0", "no", "OFF"])
def test_bool_accepts_false_spellings(word: str) -> None:
    assert parse_bool(word, SRC, BOOL) is False


@pytest.mark.parametrize("bad", ["2", "y", "enabled", 1, None])
def test_bool_rejects_anything_else(bad: object) -> None:
    with pytest.raises(ConfigError, match="OTELFLOW_X="):
        parse_bool(bad, SRC, BOOL)


def test_error_is_one_sentence_naming_variable_value_and_what_is_accepted() -> None:
    rule = Rule("float", "a number of seconds > 0 and <= 60", low=0, low_inclusive=False, high=60)
    with pytest.raises(ConfigError) as info:
        parse_float("abc", Source("OTELFLOW_FLUSH_INTERVAL"), rule)
    assert str(info.value) == (
        "OTELFLOW_FLUSH_INTERVAL='abc' is not valid: expected a number of seconds > 0 and <= 60."
    )


def test_error_for_an_argument_says_it_is_an_argument() -> None:
    rule = Rule("int", "an integer >= 1024", low=1024)
    with pytest.raises(ConfigError) as info:
        parse_int(10, Source("queue_size", is_argument=True), rule)
    assert str(info.value) == "Argument queue_size=10 is not valid: expected an integer >= 1024."


def test_error_for_a_secret_hides_the_value() -> None:
    rule = Rule("headers", "key=value pairs")
    with pytest.raises(ConfigError) as info:
        parse_mapping("Bearer s3cret", Source("OTEL_EXPORTER_OTLP_HEADERS", secret=True), rule)
    message = str(info.value)
    assert "OTEL_EXPORTER_OTLP_HEADERS" in message and "item 1 has no '='" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("rule", "value", "accepted"),
    [
        (Rule("float", "> 0", low=0, low_inclusive=False), "0", False),
        (Rule("float", "> 0", low=0, low_inclusive=False), "1e-9", True),
        (Rule("float", ">= 0", low=0), "0", True),
        (Rule("float", "<= 60", high=60), "60", True),
        (Rule("float", "<= 60", high=60), "60.0001", False),
        (Rule("float", "finite"), "nan", False),
        (Rule("float", "finite"), "inf", False),
        (Rule("float", "a number"), True, False),
        (Rule("int", "an int"), "1.5", False),
        (Rule("int", "an int"), 7.0, False),
    ],
)
def test_numbers_respect_bounds_and_reject_non_numbers(rule: Rule, value: object, accepted: bool) -> None:
    parse = parse_int if rule.kind == "int" else parse_float
    if accepted:
        parse(value, SRC, rule)
    else:
        with pytest.raises(ConfigError):
            parse(value, SRC, rule)


def test_headers_are_url_decoded_with_lowercased_keys() -> None:
    rule = Rule("headers", "pairs")
    parsed = parse_mapping("Authorization=Bearer%20abc, X-Team = a%3Db ,,", SRC, rule)
    assert parsed == {"authorization": "Bearer abc", "x-team": "a=b"}


def test_mapping_keeps_key_case_and_allows_equals_in_values() -> None:
    rule = Rule("mapping", "pairs")
    assert parse_mapping("Team=a=b,k=%2C", SRC, rule) == {"Team": "a=b", "k": ","}


def test_mapping_argument_is_taken_as_is_but_must_hold_strings() -> None:
    rule = Rule("headers", "pairs")
    assert parse_mapping({"API-Key": "a%20b"}, SRC, rule) == {"api-key": "a%20b"}
    with pytest.raises(ConfigError, match="item 1 is not a pair of strings"):
        parse_mapping({"k": 1}, SRC, rule)


def test_header_keys_must_be_http_tokens() -> None:
    with pytest.raises(ConfigError, match="item 1 has no valid key"):
        parse_mapping("bad key=v", SRC, Rule("headers", "pairs"))


def test_choice_lists_drop_duplicates_keep_order_and_read_none_as_empty() -> None:
    rule = Rule("choices", "a list", choices=("otlp", "console", "none"))
    assert parse_choices("Console, otlp,console", SRC, rule) == ("console", "otlp")
    assert parse_choices(["otlp"], SRC, rule) == ("otlp",)
    assert parse_choices("none", SRC, rule) == ()
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        parse_choices("none,otlp", SRC, rule)
    with pytest.raises(ConfigError):
        parse_choices(",", SRC, rule)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("http://localhost:4317", True),
        ("https://collector.example.com/otel", True),
        ("HTTP://host:1", True),
        ("localhost:4317", False),
        ("grpc://host:4317", False),
        ("http://", False),
        ("http://host:99999", False),
        ("http://host:port", False),
    ],
)
def test_urls_need_http_or_https_scheme_and_host(value: str, accepted: bool) -> None:
    rule = Rule("url", "a URL")
    if accepted:
        assert parse_url(value, SRC, rule) == value
    else:
        with pytest.raises(ConfigError):
            parse_url(value, SRC, rule)


def test_paths_expand_the_home_directory_and_accept_path_objects() -> None:
    rule = Rule("path", "a path")
    assert parse_path("~/runs", SRC, rule) == Path("~/runs").expanduser()
    assert parse_path(Path("a/b"), SRC, rule) == Path("a/b")
    with pytest.raises(ConfigError):
        parse_path(42, SRC, rule)


def test_run_id_pattern_rejects_path_tricks() -> None:
    rule = ENV_VARS["OTELFLOW_RUN_ID"].rule
    assert parse_str("run-2024.01_a", SRC, rule) == "run-2024.01_a"
    assert parse_str("x" * 128, SRC, rule) == "x" * 128
    for bad in (".", "..", "../up", "a/b", "x" * 129, "spa ce"):
        with pytest.raises(ConfigError):
            parse_str(bad, SRC, rule)


# --- documentation -----------------------------------------------------------------------


def test_committed_docs_match_the_renderer() -> None:
    assert DOCS.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run `python -m otelflow.config.render > docs/configuration.md`"
    )


def test_docs_list_every_variable_and_argument() -> None:
    page = render()
    for name in ENV_VARS:
        assert f"| `{name}`" in page
    for name in ARGUMENTS:
        assert f"| `{name}` |" in page


def test_docs_explain_precedence_and_the_defaults_that_differ_from_otel() -> None:
    page = render()
    assert "## Precedence" in page
    assert "127.0.0.1" in page and "Exporters default to `none`" in page
