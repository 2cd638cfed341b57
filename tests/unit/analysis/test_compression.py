"""OTELFLOW_JSONL_COMPRESSION=zstd: compressed runs read like plain ones, even when killed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import otelflow
from otelflow.analysis import open_run
from otelflow.analysis.report import build_report, format_report
from otelflow.cli.main import main

zstandard = pytest.importorskip("zstandard")

ROOT = Path(__file__).resolve().parents[3]


def _same_report(a: dict, b: dict) -> None:
    for r in (a, b):
        r["run"].pop("path")
        r["run"].pop("files")
    assert a == b


def _compressed_twin(plain: Path, dest: Path, frame_bytes: int = 4096) -> Path:
    """The same run with each file written as zstd frames of ~frame_bytes of whole lines."""
    shutil.copytree(plain, dest)
    c = zstandard.ZstdCompressor(level=3)
    for f in list(dest.glob("*.jsonl")):
        out, chunk = bytearray(), bytearray()
        for line in f.read_bytes().splitlines(keepends=True):
            chunk += line
            if len(chunk) >= frame_bytes:
                out += c.compress(bytes(chunk))
                chunk.clear()
        if chunk:
            out += c.compress(bytes(chunk))
        Path(str(f) + ".zst").write_bytes(bytes(out))
        f.unlink()
    return dest


def _work(x: int) -> int:
    return x * 2


def test_a_real_compressed_session_writes_zst_and_reads_back(tmp_path: Path) -> None:
    with otelflow.start_telemetry(
        checkpoint_path=tmp_path, jsonl_compression="zstd", resource_poll_interval=0, environ={}
    ) as tel:
        with otelflow.instrument(ThreadPoolExecutor(2)) as pool, otelflow.workflow_scope("z"):
            assert sum(f.result() for f in [pool.submit(_work, i) for i in range(20)]) == 380
    assert tel.run_dir is not None
    files = sorted(p.name for p in Path(tel.run_dir).iterdir())
    assert any(n.endswith(".jsonl.zst") for n in files) and not any(n.endswith(".jsonl") for n in files)
    r = build_report(open_run(tel.run_dir))
    assert r["tasks"]["completed"] == 20 and r["run"]["torn_lines"] == 0
    if shutil.which("zstdcat") and shutil.which("jq"):
        zst = next(Path(tel.run_dir).glob("*.jsonl.zst"))
        out = subprocess.run(
            f"zstdcat {zst} | jq -r .section | sort | uniq -c", shell=True, capture_output=True, text=True, check=True
        ).stdout
        assert " span" in out and " event" in out


def test_compressed_twin_gives_an_identical_report(run_dir: Path, tmp_path: Path) -> None:
    twin = _compressed_twin(run_dir, tmp_path / "twin" / "run-a", frame_bytes=600)
    assert list(twin.glob("*.jsonl")) == []
    _same_report(build_report(open_run(run_dir)), build_report(open_run(twin)))


def test_compressed_run_cut_mid_frame_still_reports(run_dir: Path, tmp_path: Path) -> None:
    twin = _compressed_twin(run_dir, tmp_path / "twin" / "run-a", frame_bytes=600)
    main_file = next(twin.glob("main-*.jsonl.zst"))
    data = main_file.read_bytes()
    main_file.write_bytes(data[: len(data) - 40])  # the last frame is cut short
    run = open_run(twin)
    r = build_report(run)
    assert r["tasks"]["total"] >= 1
    assert r["run"]["torn_lines"] >= 1  # the cut frame is counted, what came before stands
    assert "torn last line(s) skipped" in format_report(r)


_WRITER = textwrap.dedent(
    """
    import sys, time, otelflow
    tel = otelflow.start_telemetry(checkpoint_path=sys.argv[1], jsonl_compression="zstd",
                                   resource_poll_interval=0, flush_interval=0.05, environ={})
    trk = otelflow.tracker("killed")
    print(tel.run_dir, flush=True)
    i = 0
    with otelflow.workflow_scope("forever"):
        while True:
            tid = trk.created(f"t{i}", "step")
            trk.started(tid)
            trk.completed(tid)
            i += 1
            if i % 100 == 0:
                time.sleep(0.001)
    """
)


def test_a_compressed_run_killed_mid_write_still_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        run_dir = Path(proc.stdout.readline().strip())
        deadline = time.monotonic() + 60
        zst: list[Path] = []
        while time.monotonic() < deadline:  # wait until several frames are on disk
            zst = list(run_dir.glob("*.jsonl.zst"))
            if zst and zst[0].stat().st_size > 20_000:
                break
            time.sleep(0.05)
        assert zst and zst[0].stat().st_size > 20_000, "the writer wrote too little in 60 s"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert main(["report", str(run_dir), "--format", "json"]) == 0
    import json

    r = json.loads(capsys.readouterr().out)
    assert r["tasks"]["completed"] > 100
    # Never stopped, and its process is gone: the reader says what is known.
    assert r["run"]["status"] == "ended without stop() (killed?)"
