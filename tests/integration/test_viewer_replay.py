"""``otelflow replay`` sends the run as it was (issue 13 part 6), on real OTLP receivers.

A run is exported live to one receiver and replayed from its run directory to another; the
resource must be the same key by key (``OTEL_RESOURCE_ATTRIBUTES`` included, nothing
added) and so must every span: ids, names, times, attributes, status, events, links.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import otelflow
from otelflow.analysis import open_run
from otelflow.analysis.replay import replay
from tests.integration.otlp_receiver import GrpcReceiver, HttpReceiver, Span


@pytest.fixture(params=["grpc", "http/protobuf"])
def protocol(request: pytest.FixtureRequest) -> str:
    return request.param


def receiver_for(protocol: str) -> GrpcReceiver | HttpReceiver:
    return GrpcReceiver() if protocol == "grpc" else HttpReceiver()


def workload() -> None:
    trk = otelflow.tracker("engine")
    with otelflow.workflow_scope("etl"), otelflow.block("load"):
        ok = trk.created(None, "read")
        trk.submitted(ok)
        trk.started(ok)
        trk.completed(ok)
        bad = trk.created(None, "parse", depends_on=[ok])
        trk.started(bad)
        try:
            raise ValueError("bad shard")
        except ValueError as exc:
            trk.failed(bad, exc)
        never = trk.created(None, "write", depends_on=[bad])
        trk.canceled(never, reason="upstream failed")


def comparable(sp: Span) -> tuple:
    return (
        sp.trace_id,
        sp.span_id,
        sp.parent_span_id,
        sp.name,
        sp.start_time,
        sp.end_time,
        sp.status_code,
        sp.status_message,
        sorted(sp.attributes.items()),
        repr(sp.events),
        sp.links,
    )


def test_replay_delivers_the_live_resource_and_spans_key_by_key(tmp_path: Path, protocol: str) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "climate-sweep",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging,project.name=phoenix-proj,team=hpc",
        "OTELFLOW_WAIT_SPANS": "1",
    }
    with receiver_for(protocol) as live:
        tel = otelflow.start_telemetry(
            checkpoint_path=str(tmp_path / "runs"),
            resource_poll_interval=0,
            environ={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": live.endpoint},
        )
        workload()
        tel.stop()
        live_spans = live.spans()
    with receiver_for(protocol) as again:
        result = replay(open_run(tel.run_dir), endpoint=again.endpoint, protocol=protocol)
        replayed = again.spans()
    assert result.spans == len(live_spans) == len(replayed) == 9  # session, wf, block, 3 tasks, 3 waits
    live_res = live_spans[0].resource
    assert all(sp.resource == live_res for sp in live_spans)
    for sp in replayed:
        assert sp.resource.keys() == live_res.keys()
        for key, value in live_res.items():
            assert sp.resource[key] == value, key
    assert live_res["deployment.environment"] == "staging"
    assert live_res["project.name"] == "phoenix-proj"
    assert live_res["service.name"] == "climate-sweep"
    assert sorted(map(comparable, replayed)) == sorted(map(comparable, live_spans))
    parse = next(sp for sp in replayed if sp.name == "parse")
    (exc,) = [attrs for name, _t, attrs in parse.events if name == "exception"]
    assert "bad shard" in exc["exception.stacktrace"]
