"""Exports: CSV/Parquet round-trips, Chrome trace structure, the HTML Gantt in headless Chromium."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from otelflow.analysis import open_run
from otelflow.analysis.export_chrome import write_chrome_trace
from otelflow.analysis.export_html import write_html
from otelflow.analysis.tables_export import COLUMNS, write_csv, write_parquet
from otelflow.cli.main import main

from . import big_run

_TIMES = ("created", "resolved", "submitted", "queued", "started", "ended")


@pytest.fixture(scope="module")
def run_100k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return big_run.record(tmp_path_factory.mktemp("runs"), 100_000)


@pytest.fixture(scope="module")
def run_10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return big_run.record(tmp_path_factory.mktemp("runs"), 10, workflows=2, fail_every=4)


def _int(cell: str) -> int | None:
    return int(cell) if cell else None


def test_csv_round_trip_every_time_equals_the_run(run_dir: Path, tmp_path: Path) -> None:
    run = open_run(run_dir)
    (out,) = write_csv(run, tmp_path / "tasks.csv")
    with out.open(newline="") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == list(COLUMNS["tasks"])
    tasks = run.tasks()
    assert sorted(r["task_id"] for r in got) == sorted(tasks)
    for r in got:
        t = tasks[r["task_id"]]
        assert [_int(r[c]) for c in _TIMES] == [getattr(t, c) for c in _TIMES]
        assert r["status"] == t.state
        assert (float(r["execution_s"]) if r["execution_s"] else None) == t.execution_s
    assert {r["task_id"]: r["depends_on"] for r in got}["a3"] == "a1;a2"


def test_csv_all_tables_into_a_directory(run_dir: Path, tmp_path: Path) -> None:
    assert main(["export", str(run_dir), "--format", "csv", "--table", "all", "-o", str(tmp_path / "t")]) == 0
    with (tmp_path / "t" / "resources.csv").open(newline="") as f:
        res = list(csv.DictReader(f))
    assert [float(r["cpu_utilization"]) for r in res] == [0.5, 0.9]
    with (tmp_path / "t" / "logs.csv").open(newline="") as f:
        logs = list(csv.DictReader(f))
    assert [(r["level"], r["message"], r["task_id"]) for r in logs] == [("WARNING", "slow", "a3")]
    with (tmp_path / "t" / "events.csv").open(newline="") as f:
        events = list(csv.DictReader(f))
    checkpoint = next(e for e in events if e["type"] == "ml.Checkpoint")
    assert json.loads(checkpoint["fields"])["step"] == 100


def test_parquet_round_trip(run_100k: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    run = open_run(run_100k)
    (out,) = write_parquet(run, tmp_path / "tasks.parquet")
    table = pq.read_table(out)
    assert table.num_rows == 100_000
    cols = table.to_pydict()
    tasks = run.tasks()
    for i in range(0, 100_000, 997):
        t = tasks[cols["task_id"][i]]
        assert [cols[c][i] for c in _TIMES] == [getattr(t, c) for c in _TIMES]
        assert cols["worker"][i] == t.worker
    assert sum(1 for s in cols["status"] if s == "completed") == 100_000


def test_chrome_trace_structure(run_10: Path, tmp_path: Path) -> None:
    out = tmp_path / "trace.json"
    counts = write_chrome_trace(open_run(run_10), out)
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    threads = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert sorted(threads.values()) == ["w0", "w1", "w2", "w3"]  # one track per worker
    slices = [e for e in events if e["ph"] == "X"]
    assert len(slices) == counts["slices"] == 10
    run = open_run(run_10)
    tasks = run.tasks()
    for s in slices:
        t = tasks[s["args"]["task_id"]]
        assert threads[s["tid"]] == t.worker
        assert s["dur"] >= 0 and s["ts"] >= 0
        assert s["name"] == t.name
    by_task = {s["args"]["task_id"]: s for s in slices}
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    finishes = {e["id"]: e for e in events if e["ph"] == "f"}
    deps = sum(len(t.depends_on) for t in tasks.values())
    assert deps == counts["flows"] == len(starts) == len(finishes) > 0
    for fid, f in finishes.items():
        s = starts[fid]
        assert f["bp"] == "e"
        down = next(x for x in slices if x["tid"] == f["tid"] and x["ts"] == f["ts"])
        up_id = tasks[down["args"]["task_id"]].depends_on[0]
        up = by_task[up_id]
        assert up["tid"] == s["tid"] and up["ts"] <= s["ts"] <= up["ts"] + up["dur"]


def _chromium(page: Path, tmp_path: Path) -> tuple[str, str, Path]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium)")
    common = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    common += [f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--window-size=1280,900"]
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180, check=False
    )
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=180, check=False
    )
    return dom.stdout, dom.stderr, shot


def _bar_pixels(png: Path) -> int:
    import matplotlib.image as mpimg

    img = mpimg.imread(str(png))[:, :, :3]
    blue = (abs(img[:, :, 0] - 0x4C / 255) < 0.03) & (abs(img[:, :, 1] - 0x72 / 255) < 0.03)
    green = (abs(img[:, :, 0] - 0x55 / 255) < 0.03) & (abs(img[:, :, 1] - 0xA8 / 255) < 0.03)
    return int((blue | green).sum())


@pytest.mark.parametrize("size", ["run_10", "run_100k"])
def test_html_gantt_renders_in_headless_chromium(size: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run_dir: Path = request.getfixturevalue(size)
    page = tmp_path / "gantt.html"
    counts = write_html(open_run(run_dir), page)
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: nothing to fetch
    if size == "run_100k":
        assert counts == {"tasks": 100_000, "bars": 20_000, "lanes": 4}
        assert page.stat().st_size < 3_000_000  # bounded
    else:
        assert counts["bars"] == 10
    dom, log, shot = _chromium(page, tmp_path)
    assert 'data-rendered="1"' in dom, log[-2000:]
    assert int(dom.split('data-bars="')[1].split('"')[0]) > 0
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert console == []
    assert _bar_pixels(shot) > 500  # the screenshot shows bars in the task colours


def test_export_command_messages(run_10: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(run_10), "--format", "chrome", "-o", str(tmp_path / "t.json")]) == 0
    assert "10 task slices on 4 worker tracks" in capsys.readouterr().out
    assert main(["export", str(run_10), "--format", "html", "--table", "tasks", "-o", str(tmp_path / "x")]) == 2
    assert "--table is for --format csv or parquet." in capsys.readouterr().err
