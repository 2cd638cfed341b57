"""Shared fixtures: a real Telemetry on a temp run directory with in-memory OTel sinks."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otelflow
from otelflow import _global


class Capture:
    """A started Telemetry plus the real OTel in-memory exporters attached to it."""

    def __init__(self, telemetry: otelflow.Telemetry, spans: InMemorySpanExporter, metrics: InMemoryMetricReader):
        self.telemetry = telemetry
        self.span_exporter = spans
        self.metric_reader = metrics

    def spans(self) -> list[Any]:
        return list(self.span_exporter.get_finished_spans())

    def lines(self, section: str | None = None) -> list[dict[str, Any]]:
        return read_lines(self.telemetry.run_dir, section)


def read_lines(run_dir: Path | None, section: str | None = None) -> list[dict[str, Any]]:
    assert run_dir is not None
    out = []
    for f in sorted(Path(run_dir).glob("*.jsonl")):
        for raw in f.read_bytes().splitlines():
            rec = json.loads(raw)
            if section is None or rec.get("section") == section:
                out.append(rec)
    return out


def _otelflow_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("otelflow")}


def _open_run_files() -> set[str]:
    """Run files (``*.jsonl``) this process holds open: each should close with its session."""
    out = set()
    try:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.endswith(".jsonl"):
                out.add(target)
    except OSError:  # no /proc: nothing to check
        pass
    return out


@pytest.fixture(autouse=True)
def _clean_global() -> Iterator[None]:
    """Stop what a test left running, then fail it if otelflow threads or run files leaked."""
    threads_before = _otelflow_threads()
    files_before = _open_run_files()
    yield
    tel = _global.current()
    if tel is not None:
        tel.stop(timeout=5)
    _global.reset()
    deadline = time.monotonic() + 5.0  # threads end just after stop() returns: wait for them
    leaked = _otelflow_threads() - threads_before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.02)
        leaked = {t for t in leaked if t.is_alive()}
    assert not leaked, f"the test left otelflow threads running: {sorted(t.name for t in leaked)}"
    files = _open_run_files() - files_before
    assert not files, f"the test left run files open: {sorted(files)}"


@pytest.fixture
def capture(tmp_path: Path) -> Iterator[Capture]:
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path / "runs"),
        resource_poll_interval=0,
        span_processors=[SimpleSpanProcessor(exporter)],
        metric_readers=[reader],
        environ={},
    )
    cap = Capture(tel, exporter, reader)
    yield cap
    tel.stop(timeout=5)


@pytest.fixture
def caplog_otelflow(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="otelflow")
    return caplog
