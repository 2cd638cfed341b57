"""The ``otelflow`` command line: exit codes, messages, and what each command prints."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otelflow.cli.main import main


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("otelflow: error: ")
    assert "Traceback" not in err
    return lines[0]


# --- report ----------------------------------------------------------------------------------


def test_report_text(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Run run-a  (synthetic, completed)")
    assert "Tasks: 7 — 5 completed, 1 failed, 1 incomplete" in out
    assert "Critical path: 4 tasks, 18.000s" in out


def test_report_json_latest_run_from_env(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--json"]) == 0  # $OTELFLOW_RUNS_DIR → its latest run
    report = json.loads(capsys.readouterr().out)
    assert report["run"]["run_id"] == "run-a"
    assert report["tasks"]["total"] == 7
    assert report["duration_s"]["p95"] == pytest.approx(4.75)


def test_report_by_run_id_and_top(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "run-a", "--top", "1", "--json"]) == 0
    assert [s["task_id"] for s in json.loads(capsys.readouterr().out)["slowest"]] == ["b2"]


def test_report_missing_run_is_one_sentence_exit_2(
    runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = _one_error_line(captured.err)
    assert "No run at" in line and "expected a run directory" in line


def test_report_on_an_empty_runs_dir(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs_dir.mkdir()
    assert main(["report"]) == 2
    assert "No runs in" in _one_error_line(capsys.readouterr().err)


# --- compare ---------------------------------------------------------------------------------


def test_compare(run_dir: Path, runs_dir: Path, synthetic: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    tasks = {k: v for k, v in synthetic.TASKS.items() if v[1] == "wf-a"}
    synthetic.write_run(runs_dir, "run-b", tasks=tasks, start_offset=50)
    assert main(["compare", "run-a", "run-b"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("A: run-a")
    assert "Only in A: eval, fit, prep" in out
    assert main(["compare", "run-a", "run-b", "--json"]) == 0
    cmp = json.loads(capsys.readouterr().out)
    assert cmp["tasks"]["total"]["delta"] == -3


def test_compare_with_a_missing_run(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(run_dir), "missing-run"]) == 2
    assert "missing-run" in _one_error_line(capsys.readouterr().err)


def test_compare_needs_two_runs(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(run_dir)]) == 2
    assert "RUN_B" in capsys.readouterr().err


# --- plot ------------------------------------------------------------------------------------


def test_plot(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "t.png"
    assert main(["plot", str(run_dir), "-o", str(out), "--by", "workflow"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    assert f"Wrote {out} (7 tasks of run run-a)." in capsys.readouterr().out
    assert main(["plot", "--kind", "concurrency"]) == 0  # default name, in the cwd
    assert (tmp_path / "run-a-timeline.png").is_file()


def test_plot_into_a_missing_directory(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    assert main(["plot", str(run_dir), "-o", str(tmp_path / "no" / "such" / "x.png")]) == 2
    assert "No such file or directory" in _one_error_line(capsys.readouterr().err)


def test_plot_without_matplotlib(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    assert main(["plot", str(run_dir)]) == 2
    assert "pip install 'otelflow[plots]'" in _one_error_line(capsys.readouterr().err)


def test_plot_bad_choice_is_a_usage_error(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(run_dir), "--by", "node"]) == 2
    assert "invalid choice" in capsys.readouterr().err


# --- replay ----------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    received: list[ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            req = ExportTraceServiceRequest()
            req.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(req)
            body = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="otlp-http-receiver", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_replay(
    run_dir: Path, receiver: tuple[str, list[Any]], synthetic: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint, received = receiver
    argv = ["replay", str(run_dir), "--endpoint", endpoint, "--protocol", "http/protobuf", "--header", "x-token=abc"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out == (
        f"Sent 11 spans of run run-a (trace {synthetic.TRACE_ID}) to {endpoint} over http/protobuf in 1 request(s).\n"
    )
    ids = {sp.span_id.hex() for r in received for rs in r.resource_spans for ss in rs.scope_spans for sp in ss.spans}
    assert synthetic.span_id("a4") in ids and len(ids) == 11


def test_replay_to_a_dead_endpoint(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [
        "replay",
        str(run_dir),
        "--endpoint",
        f"http://127.0.0.1:{port}",
        "--protocol",
        "http/protobuf",
        "--timeout",
        "0.5",
    ]
    assert main(argv) == 2
    assert "did not accept the spans" in _one_error_line(capsys.readouterr().err)


def test_replay_bad_header(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(run_dir), "--header", "novalue"]) == 2
    assert "is not KEY=VALUE" in _one_error_line(capsys.readouterr().err)


def test_replay_bad_protocol_from_env(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    assert main(["replay", str(run_dir), "--endpoint", "http://127.0.0.1:1"]) == 2
    assert "Unknown OTLP protocol 'http/json'" in _one_error_line(capsys.readouterr().err)


# --- runs ------------------------------------------------------------------------------------


def test_runs(runs_dir: Path, synthetic: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    synthetic.write_run(runs_dir, "run-late", start_offset=60)
    synthetic.write_run(runs_dir, "run-early")
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["RUN", "ID", "STARTED", "WALL", "STATUS", "TASKS", "FAILED", "SERVICE"]
    assert lines[1].startswith("run-early") and lines[2].startswith("run-late")
    assert "20.000s" in lines[1] and "completed" in lines[1]
    assert lines[-1] == f"2 run(s) in {runs_dir}"
    assert main(["runs", str(runs_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in rows] == ["run-early", "run-late"]


def test_runs_empty_and_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"No runs in {tmp_path}.\n"
    assert main(["runs", str(tmp_path / "missing")]) == 2
    assert "No runs directory at" in _one_error_line(capsys.readouterr().err)


# --- demo and the rest -----------------------------------------------------------------------


def test_demo_forwards_the_remaining_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("otelflow.demo")

    def demo_main(argv: list[str] | None = None) -> int:
        seen.append(list(argv or []))
        return 3

    fake.main = demo_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "otelflow.demo", fake)
    assert main(["demo", "--tasks", "10", "--help"]) == 3
    assert seen == [["--tasks", "10", "--help"]]


def test_demo_missing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "otelflow.demo", None)
    assert main(["demo"]) == 2
    assert "demo is not available" in _one_error_line(capsys.readouterr().err)


def test_no_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: otelflow")
    for command in ("report", "compare", "plot", "replay", "runs", "demo"):
        assert command in err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "usage: otelflow" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("otelflow ")
    assert main(["report", "--help"]) == 0
    assert "--runs-dir" in capsys.readouterr().out


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--nope"]) == 2
    assert "unrecognized arguments: --nope" in capsys.readouterr().err


def test_replay_failure_is_one_line_even_when_the_exporter_retries(run_dir: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "otelflow", "replay", str(run_dir), "--endpoint", f"http://127.0.0.1:{port}",
         "--protocol", "http/protobuf", "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[3],
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout == ""
    line = _one_error_line(proc.stderr)
    assert "did not accept the spans over http/protobuf" in line


def test_python_dash_m_otelflow(run_dir: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        [sys.executable, "-m", "otelflow", "report", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Run run-a")
    proc = subprocess.run(
        [sys.executable, "-m", "otelflow", "report", str(run_dir / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("otelflow: error: ") and "Traceback" not in proc.stderr


def test_a_real_demo_run_reads_back_consistently(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """End to end: the live pipeline writes a run, the report agrees with its own summary."""
    pytest.importorskip("otelflow.demo")
    runs = tmp_path / "demo-runs"
    assert main(["demo", "--tasks", "20", "--workflows", "2", "--runs-dir", str(runs)]) == 0
    capsys.readouterr()
    assert main(["report", str(runs), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    meta = json.loads(next(runs.glob("*/run.json")).read_text())
    summary = meta["summary"]["tasks"]
    for state in ("completed", "failed", "canceled"):
        assert report["tasks"][state] == summary[state], state
    assert report["tasks"]["total"] == summary["created"]
    assert report["run"]["torn_lines"] == 0 and report["run"]["bad_lines"] == 0
    assert report["duration_s"]["count"] == meta["summary"]["duration_s"]["count"]
    assert report["duration_s"]["mean"] == pytest.approx(meta["summary"]["duration_s"]["mean"])
    assert report["critical_path"]["tasks"] >= 1
