"""Event types, define_event() validation, make_event(), and pickling across processes."""

from __future__ import annotations

import multiprocessing as mp
import pickle

import msgspec
import pytest

import otelflow
from otelflow.errors import EventError
from otelflow.events import TaskFailed, make_event

Checkpoint = otelflow.define_event("ml.Checkpoint", epoch=int, loss=(float, 0.0), tags=(list[str], []))


def test_events_are_immutable_and_carry_times():
    ev = make_event(Checkpoint, epoch=3)
    assert ev.event_time > 0 and ev.event_id != 0
    assert ev.event_name == "ml.Checkpoint"
    with pytest.raises(AttributeError):
        ev.epoch = 4  # type: ignore[misc]


def test_define_event_is_idempotent_for_the_same_schema():
    again = otelflow.define_event("ml.Checkpoint", epoch=int, loss=(float, 0.0), tags=(list[str], []))
    assert again is Checkpoint


@pytest.mark.parametrize(
    ("args", "fields", "message"),
    [
        (("Checkpoint",), {}, "namespace"),
        (("ml.",), {}, "namespace"),
        (("ml.Bad Name",), {}, "not valid"),
        (("ml.X",), {"task_id": str}, "reserved"),
        (("ml.X",), {"event_time": int}, "reserved"),
        (("ml.X",), {"_private": int}, "not valid"),
        (("ml.X",), {"f": object}, "cannot be serialized"),
        (("ml.X",), {"f": (int, "nope")}, "does not match"),
        (("ml.X",), {"f": (int, 1, 2)}, "(type, default)"),
        (("TaskStarted",), {}, "namespace"),
        (("ml.Checkpoint",), {"epoch": str}, "different definition"),
    ],
)
def test_bad_definitions_fail_at_definition_time_with_a_clear_message(args, fields, message):
    with pytest.raises(EventError, match=None) as info:
        otelflow.define_event(*args, **fields)
    assert message in str(info.value)


def test_make_event_rejects_unknown_fields_and_names():
    with pytest.raises(EventError, match="valid fields"):
        make_event("ml.Checkpoint", epoch=1, nope=2)
    with pytest.raises(EventError, match="define_event"):
        make_event("ml.Missing")


def test_user_events_pickle_and_encode():
    ev = make_event(Checkpoint, epoch=2, loss=0.5, tags=["a"])
    back = pickle.loads(pickle.dumps(ev))
    assert back == ev and type(back) is Checkpoint
    assert b'"type":"ml.Checkpoint"' in msgspec.json.encode(ev)


def _roundtrip(data: bytes) -> tuple[str, int, float]:
    ev = pickle.loads(data)
    return ev.event_name, ev.epoch, ev.loss


def test_user_events_cross_a_spawned_process_that_never_defined_them():
    ev = make_event(Checkpoint, epoch=7, loss=0.25)
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(_roundtrip, (pickle.dumps(ev),)) == ("ml.Checkpoint", 7, 0.25)


def test_builtin_events_pickle():
    ev = TaskFailed(task_id="t", error_type="ValueError", error_message="m")
    assert pickle.loads(pickle.dumps(ev)) == ev
