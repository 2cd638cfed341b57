"""Bad input, fuzzed (issue 18, part 5): definition/config time gives a clear EventError /
ConfigError and nothing else; run time never raises, never writes an invalid or ambiguous
JSONL line, and counts what it had to fix or refuse; the reader survives any bytes."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otelflow
from otelflow.analysis import open_run
from otelflow.analysis.report import build_report, format_report
from otelflow.config import env as ev
from otelflow.config import load_settings
from otelflow.errors import ConfigError, EventError

# Deterministic and bounded: the same examples on every run, no example database on disk.
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_texts = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)  # lone surrogates too
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    _texts,
    st.binary(max_size=8),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(_texts, st.integers()), inner, max_size=4),
        st.sets(st.integers(), max_size=3),
        st.tuples(inner, inner),
    ),
    max_leaves=12,
)
_anything = st.one_of(_values, st.builds(object), st.just(math.nan), st.just([[[[[]]]]]))


def _no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys: {keys}"
    return dict(pairs)


def _valid_jsonl(run_dir: Path) -> list[dict[str, Any]]:
    """Every line of every JSONL file: strict UTF-8, one JSON object, no duplicate keys."""
    out = []
    for f in run_dir.glob("*.jsonl"):
        for raw in f.read_bytes().splitlines():
            text = raw.decode("utf-8")  # strict: no lone surrogates made it to disk
            obj = json.loads(text, object_pairs_hook=_no_dupes, parse_constant=_no_constants)
            assert isinstance(obj, dict)
            out.append(obj)
    return out


def _no_constants(name: str) -> None:
    raise AssertionError(f"{name} written to JSONL")


# -- definition time ---------------------------------------------------------------------------


_field_names = st.one_of(
    st.sampled_from(["type", "section", "trace_id", "span_id", "event_id", "task_id", "x", "ok_1", "_p", "class"]),
    st.text(max_size=8),
)
_types = st.sampled_from([int, str, float, bool, list[int], dict[str, int], int | None, object, bytes, 5, "str", None])
_specs = st.one_of(_types, st.tuples(_types, _anything), st.tuples(_types), st.tuples(_types, _anything, _anything))


@FUZZ
@given(
    name=st.one_of(_texts, st.sampled_from(["ns.Name", "ns.Name\n", "a.b.c", ".x", "x."])),
    fields=st.dictionaries(_field_names, _specs, max_size=3),
)
def test_define_event_raises_only_event_error(name, fields):
    try:
        cls = otelflow.define_event(name, **fields)
    except EventError as exc:
        assert str(exc).endswith(".") and len(str(exc)) < 2000
        return
    # Accepted: a well-formed definition whose default instance is valid JSON.
    assert isinstance(name, str) and name.isascii() and "\n" not in name
    assert not set(fields) & {"type", "section", "trace_id", "span_id"}
    try:
        ev_ = cls()
    except TypeError:
        return  # required fields: fine
    json.loads(json.dumps(json.loads(__import__("msgspec").json.encode(ev_))))


_env_names = st.sampled_from(sorted(ev.ENV_VARS))
_env_values = st.one_of(
    _texts.filter(lambda s: "\x00" not in s),
    st.sampled_from(["1e300", "1e-9", "-1", "0", "nan", "inf", "65536", "1e20", "true", "grpc", "none", "a=b,c"]),
)


@FUZZ
@given(env=st.dictionaries(_env_names, _env_values, max_size=4))
def test_environment_values_give_settings_or_one_config_error(env):
    try:
        load_settings(environ=env)
    except ConfigError as exc:
        msg = str(exc)
        assert "\n" not in msg.strip() and len(msg) < 3000
        named = [n for n in env if n in msg]
        assert named, f"the error names no variable: {msg}"


@FUZZ
@given(name=_anything)
def test_scope_names_are_accepted_or_a_config_error(name):
    try:
        with otelflow.workflow_scope(name), otelflow.block(name if isinstance(name, str) and name else "b"):
            pass
    except ConfigError:
        pass


# -- run time ----------------------------------------------------------------------------------


_ids = st.one_of(_texts, st.integers(), st.none(), st.lists(st.integers(), max_size=2), st.builds(object))
_times = st.one_of(st.none(), st.integers(), st.floats(), _texts, st.just(-1))
_figures = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), _texts, st.booleans())
_attributes = st.one_of(st.none(), _texts, st.dictionaries(st.one_of(_texts, st.integers()), _anything, max_size=3))


@FUZZ
@given(
    calls=st.lists(
        st.tuples(_ids, st.one_of(_texts, st.integers(), st.none()), _attributes, _times, _figures, _figures),
        min_size=1,
        max_size=6,
    ),
    values=st.lists(_anything, max_size=3),
)
def test_tracker_and_emit_never_raise_and_never_write_a_bad_line(calls, values):
    otelflow.define_event("fuzz.Any", payload=(list, []), text=(str, ""), number=(float, 0.0), count=(int, 0))
    with tempfile.TemporaryDirectory() as d:
        tel = otelflow.start_telemetry(checkpoint_path=d, resource_poll_interval=0, environ={})
        tr = otelflow.tracker("fuzz")
        for tid, name, attrs, when, cpu, rss in calls:
            t = tr.created(tid, name, attributes=attrs, event_time=when, depends_on=[tid])  # type: ignore[arg-type]
            assert isinstance(t, str)
            tr.submitted(t, when)  # type: ignore[arg-type]
            tr.started(t, when, worker=name, pid=rss)  # type: ignore[arg-type]
            tr.completed(t, when, cpu_time_s=cpu, peak_rss_bytes=rss)  # type: ignore[arg-type]
            tr.failed(tid, name, when, message=name, stacktrace=name)  # type: ignore[arg-type]
            tr.canceled(tid, when, reason=name)  # type: ignore[arg-type]
        for v in values:
            for field in ("payload", "text", "number", "count"):
                otelflow.emit("fuzz.Any", **{field: v})
        summary = tel.stop()
        assert summary["dropped"]["internal_errors"] == 0
        lines = _valid_jsonl(tel.run_dir)
        events = [ln for ln in lines if ln["section"] == "event"]
        for e in events:
            assert isinstance(e["event_time"], int) and e["event_time"] > 0
            if e["type"] == "fuzz.Any":
                assert isinstance(e["count"], int) and isinstance(e["text"], str)
                assert isinstance(e["number"], float | int)
        # The report reads it and its numbers are the summary's.
        report = build_report(open_run(tel.run_dir))
        assert report["tasks"]["total"] == len({e["task_id"] for e in events if e.get("task_id")})
        assert report["run"]["bad_lines"] == 0
        format_report(report)


# -- the reader -------------------------------------------------------------------------------

_line_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_keys = st.sampled_from(
    [
        "section",
        "type",
        "task_id",
        "task_name",
        "event_time",
        "start_time",
        "end_time",
        "time",
        "kind",
        "name",
        "status",
        "attributes",
        "depends_on",
        "span_id",
        "trace_id",
        "parent_span_id",
        "workflow_id",
        "block_id",
        "points",
        "events",
        "links",
        "cpu_time_s",
        "worker",
        "error_type",
        "session_id",
    ]
)
_lines = st.dictionaries(_keys, _line_values, max_size=8)
_realistic = st.fixed_dictionaries(
    {"section": st.sampled_from(["event", "span", "metric", "log"]),
     "type": st.sampled_from(["TaskCreated", "TaskStarted", "TaskCompleted", "TaskFailed", "WorkflowStarted"]),
     "event_time": st.integers(0, 2**63)},
    optional={"task_id": _line_values,
              "kind": st.sampled_from(["task", "workflow", "block", "session", "x"]),
              "start_time": _line_values, "end_time": _line_values, "status": _line_values,
              "attributes": _line_values, "depends_on": _line_values, "workflow_id": _line_values,
              "name": _line_values, "points": _line_values},
)


@FUZZ
@given(
    files=st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.lists(st.one_of(_lines, _realistic), max_size=8).map(
                lambda ls: b"".join(json.dumps(x).encode() + b"\n" for x in ls)
            ),
        ),
        min_size=1,
        max_size=3,
    ),
    meta=st.one_of(
        st.binary(max_size=100),
        st.dictionaries(
            st.sampled_from(
                ["status", "run_id", "start_time", "end_time", "pid", "host", "problems", "service_name", "summary"]
            ),
            _line_values,
            max_size=5,
        ).map(lambda d: json.dumps(d).encode()),
    ),
)
def test_the_reader_and_the_report_survive_any_run_directory(files, meta):
    with tempfile.TemporaryDirectory() as d:
        run_dir = Path(d) / "run"
        run_dir.mkdir()
        (run_dir / "run.json").write_bytes(meta)
        for i, data in enumerate(files):
            (run_dir / f"p{i}.jsonl").write_bytes(data)
        run = open_run(run_dir)
        report = build_report(run)
        text = format_report(report)
        assert text.endswith("\n")
        assert report["run"]["bad_lines"] >= 0


def test_the_reader_survives_hostile_entries(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "ok.jsonl").write_bytes(b'{"section":"event","type":"TaskCreated","task_id":"a","event_time":1}\n')
    os.mkfifo(run_dir / "fifo.jsonl")
    (run_dir / "dir.jsonl").mkdir()
    (run_dir / "loop.jsonl").symlink_to(run_dir / "loop.jsonl")
    (run_dir / "dangling.jsonl").symlink_to(tmp_path / "nowhere")
    os.mkfifo(run_dir / "run.json")
    run = open_run(run_dir)
    assert set(run.tasks()) == {"a"}
    assert set(run.skipped_files) == {"fifo.jsonl", "dir.jsonl", "loop.jsonl", "dangling.jsonl"}
    format_report(build_report(run))
