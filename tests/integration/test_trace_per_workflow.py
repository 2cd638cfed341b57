"""A trace per workflow (issue 13 part 8, ``OTELFLOW_TRACE_PER=workflow``), on real receivers.

Every workflow's spans share one trace id of their own; the workflow span is its trace's
root, linked to the session span, and the session span links to every workflow; spans
you make inside a task follow it into its workflow's trace; the run directory, the report
and ``otelflow replay`` handle it (replay reproduces the same ids).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from opentelemetry import trace

import otelflow
from otelflow.analysis import open_run
from otelflow.analysis.critical_path import critical_path
from otelflow.analysis.replay import replay
from otelflow.analysis.report import build_report
from otelflow.integrations import instrument, uninstrument
from tests.integration.otlp_receiver import GrpcReceiver, HttpReceiver, Span


@pytest.fixture(params=["grpc", "http/protobuf"])
def protocol(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


def receiver_for(protocol: str) -> GrpcReceiver | HttpReceiver:
    return GrpcReceiver() if protocol == "grpc" else HttpReceiver()


def user_work(n: int) -> int:
    with trace.get_tracer("tests.user").start_as_current_span("user-work"):
        return n


def workload() -> dict[str, str]:
    trk = otelflow.tracker("engine")
    ids = {}
    with ThreadPoolExecutor(2) as pool:
        instrument(pool)
        try:
            with otelflow.workflow_scope("prep") as wf_a, otelflow.block("load"):
                up = trk.created(None, "extract")
                trk.started(up)
                trk.completed(up)
                pool.submit(user_work, 1).result(timeout=30)
            with otelflow.workflow_scope("train") as wf_b:
                down = trk.created(None, "fit", depends_on=[up])  # across workflows
                trk.started(down)
                trk.completed(down)
                pool.submit(user_work, 2).result(timeout=30)
        finally:
            uninstrument(pool)
    ids.update(prep=wf_a, train=wf_b, up=up, down=down)
    return ids


def test_each_workflow_is_a_trace_linked_both_ways_and_replay_keeps_the_ids(tmp_path: Path, protocol: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_METRICS_EXPORTER": "none", "OTELFLOW_TRACE_PER": "workflow"}
    with receiver_for(protocol) as live:
        tel = otelflow.start_telemetry(
            checkpoint_path=str(tmp_path / "runs"),
            resource_poll_interval=0,
            environ={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": live.endpoint},
        )
        ids = workload()
        tel.stop()
        spans = live.spans()
    by_name: dict[str, list[Span]] = {}
    for sp in spans:
        by_name.setdefault(sp.name, []).append(sp)
    (session,) = [sp for sp in spans if "otelflow.session.id" in sp.attributes and sp.name.startswith("session ")]
    (prep,) = by_name["workflow prep"]
    (train,) = by_name["workflow train"]
    assert session.trace_id == tel.trace_id
    assert len({session.trace_id, prep.trace_id, train.trace_id}) == 3
    # Every span of a workflow is in its trace: block, tasks, the user spans in its tasks.
    wf_of = {prep.trace_id: "prep", train.trace_id: "train"}
    members = {
        "prep": {"workflow prep", "block load", "extract", "user_work", "user-work"},
        "train": {"workflow train", "fit", "user_work", "user-work"},
    }
    for sp in spans:
        if sp is session:
            continue
        assert sp.trace_id in wf_of, sp.name
        assert sp.name in members[wf_of[sp.trace_id]], (sp.name, wf_of[sp.trace_id])
    assert len(by_name["user-work"]) == 2 and {sp.trace_id for sp in by_name["user-work"]} == set(wf_of)
    # Workflow spans are their trace's root, linked to the session; the session links to them.
    for wf in (prep, train):
        assert wf.parent_span_id is None
        assert wf.links == (session.span_id,)
    assert set(session.links) == {prep.span_id, train.span_id}
    # The cross-workflow dependency link points into the other trace.
    (fit,) = by_name["fit"]
    (extract,) = by_name["extract"]
    assert fit.links == (extract.span_id,)
    # The report reads it like any run.
    run = open_run(tel.run_dir)
    report = build_report(run)
    assert report["tasks"]["completed"] == 4
    assert run.tasks()[ids["down"]].depends_on == (ids["up"],)
    path = critical_path(run, workflow_id=None)
    assert path is not None and report["critical_path"]["tasks"] == len(path.steps)
    # Replay sends the same ids, links included (trace ids of links checked on the wire).
    with receiver_for(protocol) as again:
        replay(open_run(tel.run_dir), endpoint=again.endpoint, protocol=protocol)
        replayed = again.spans()
        link_traces = {
            sp.span_id.hex(): [ln.trace_id.hex() for ln in sp.links]
            for req in again.requests("traces")
            for rs in req.message.resource_spans
            for ss in rs.scope_spans
            for sp in ss.spans
        }
    key = lambda sp: (sp.trace_id, sp.span_id, sp.parent_span_id, sp.name, sp.links)  # noqa: E731
    assert sorted(map(key, replayed)) == sorted(map(key, spans))
    assert set(link_traces[session.span_id]) == {prep.trace_id, train.trace_id}
    assert link_traces[prep.span_id] == [session.trace_id]
    assert link_traces[fit.span_id] == [prep.trace_id]


def test_one_trace_per_session_is_the_default(tmp_path: Path) -> None:
    with HttpReceiver() as live:
        tel = otelflow.start_telemetry(
            checkpoint_path=str(tmp_path / "runs"),
            resource_poll_interval=0,
            environ={"OTEL_EXPORTER_OTLP_ENDPOINT": live.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
        )
        workload()
        tel.stop()
        spans = live.spans()
    assert {sp.trace_id for sp in spans} == {tel.trace_id}
    assert all(sp.links == () for sp in spans if sp.name.startswith("workflow "))
