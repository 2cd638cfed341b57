"""Security: loopback binds, no secrets on disk or in logs, the umask respected, the CLI
writing only where told (issue 18, found item 12 and part 6)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from otelflow.redact import REDACTED, redact_argv, redact_url
from tests.reliability.conftest import child_env, run_child, write_script
from tests.unit.analysis import synthetic

SECRET = "s3cr3t-VALUE-42"


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["prog", "--token", SECRET, "x"], ["prog", "--token", REDACTED, "x"]),
        (["prog", f"--token={SECRET}"], ["prog", f"--token={REDACTED}"]),
        (["prog", f"--db-password={SECRET}"], ["prog", f"--db-password={REDACTED}"]),
        (["prog", "--api-key", SECRET], ["prog", "--api-key", REDACTED]),
        (["prog", f"API_KEY={SECRET}"], ["prog", f"API_KEY={REDACTED}"]),
        (["prog", f"https://user:{SECRET}@host/x"], ["prog", f"https://user:{REDACTED}@host/x"]),
        (["prog", f"--url=https://h/x?access_token={SECRET}&a=1"], ["prog", f"--url=https://h/x?access_token={REDACTED}&a=1"]),
        (["prog", "--workers", "4", "in.csv"], ["prog", "--workers", "4", "in.csv"]),
        (["prog", "--token", "--verbose"], ["prog", "--token", "--verbose"]),
    ],
)
def test_secret_looking_argv_values_are_redacted(argv, want):
    assert redact_argv(argv) == want


def test_urls_without_credentials_are_unchanged():
    assert redact_url("http://localhost:4318/v1/traces") == "http://localhost:4318/v1/traces"


_CHILD = """
import logging, sys, otelflow
logging.basicConfig(level=logging.DEBUG)
tel = otelflow.start_telemetry(checkpoint_path=sys.argv[1], resource_poll_interval=0, capture_logs=True)
tr = otelflow.tracker("x")
tr.completed(tr.created(None, "w"))
logging.getLogger("app").warning("working")
tel.stop()
"""


def test_no_secret_reaches_run_json_the_jsonl_or_the_logs(tmp_path):
    runs = tmp_path / "runs"
    env = child_env(
        OTEL_EXPORTER_OTLP_HEADERS=f"authorization=Bearer%20{SECRET}",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",  # nothing listens: exports fail
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_TIMEOUT="200",
    )
    script = write_script(tmp_path, _CHILD)
    res = run_child(
        script, str(runs), "--token", SECRET, f"--password={SECRET}", f"https://u:{SECRET}@h/", env=env
    )
    assert res.returncode == 0, res.stderr
    assert SECRET not in res.stdout and SECRET not in res.stderr
    (run_dir,) = list(runs.iterdir())
    for f in run_dir.iterdir():
        assert SECRET not in f.read_text(errors="replace"), f.name
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["argv"][1:] == [str(runs), "--token", REDACTED, f"--password={REDACTED}", f"https://u:{REDACTED}@h/"]


def test_run_files_do_not_widen_the_umask(tmp_path):
    script = write_script(
        tmp_path,
        """
        import os, sys, otelflow
        os.umask(0o077)
        tel = otelflow.start_telemetry(checkpoint_path=sys.argv[1], resource_poll_interval=0)
        tel.stop()
        """,
    )
    runs = tmp_path / "runs"
    assert run_child(script, str(runs)).returncode == 0
    paths = list(runs.rglob("*"))
    assert paths
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o077 == 0, (p, oct(mode))


def test_the_prometheus_endpoint_binds_loopback_unless_configured(tmp_path):
    import otelflow

    tel = otelflow.start_telemetry(
        checkpoint_path=tmp_path, resource_poll_interval=0, prometheus_port=0, environ={}
    )
    try:
        host, port = tel.prometheus_address  # type: ignore[misc]
        assert host in ("127.0.0.1", "localhost", "::1")
        assert port > 0
    finally:
        tel.stop()


def test_a_taken_prometheus_port_is_a_clear_error_naming_the_port_and_variable(tmp_path):
    import socket

    import otelflow
    from otelflow.errors import ConfigError

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        with pytest.raises(ConfigError) as err:
            otelflow.start_telemetry(
                checkpoint_path=tmp_path,
                resource_poll_interval=0,
                environ={"OTEL_EXPORTER_PROMETHEUS_PORT": str(port), "OTEL_METRICS_EXPORTER": "prometheus"},
            )
        assert str(port) in str(err.value) and "OTEL_EXPORTER_PROMETHEUS_PORT" in str(err.value)
    finally:
        sock.close()
    # Nothing was left half-started: a session on a free port starts and stops cleanly.
    tel = otelflow.start_telemetry(checkpoint_path=tmp_path, resource_poll_interval=0, environ={})
    assert tel.active
    tel.stop()


def test_cli_commands_write_only_where_they_are_told(tmp_path):
    pytest.importorskip("matplotlib")
    run_dir = synthetic.write_run(tmp_path / "runs")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = tmp_path / "out"
    out.mkdir()

    def snapshot() -> dict[Path, float]:
        return {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if not p.is_relative_to(out)}

    before = snapshot()
    for args in (
        ["report", str(run_dir)],
        ["report", str(run_dir), "--json"],
        ["compare", str(run_dir), str(run_dir)],
        ["runs", str(run_dir.parent)],
        ["plot", str(run_dir), "-o", str(out / "p.png")],
    ):
        res = subprocess.run(
            [sys.executable, "-m", "otelflow", *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            env=child_env(),
            cwd=cwd,
        )
        assert res.returncode == 0, (args, res.stderr)
    assert snapshot() == before  # nothing written, nothing touched outside out/
    assert [p.name for p in out.iterdir()] == ["p.png"]
    assert os.listdir(cwd) == []
