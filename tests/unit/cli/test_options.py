"""``report``/``compare`` options: --latest, --run-id, --format, --output, --fail-if-slower."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from otelflow.cli.main import build_parser, main


@pytest.fixture
def two_runs(runs_dir: Path, synthetic: ModuleType) -> tuple[Path, Path]:
    a = synthetic.write_run(runs_dir, "run-a")
    b = synthetic.write_run(runs_dir, "run-b", start_offset=100)
    return a, b


def _slow_fit(synthetic: ModuleType) -> dict[str, tuple[object, ...]]:
    """The synthetic tasks, with "fit" (b2) running 10 s instead of 5 s."""
    tasks = dict(synthetic.TASKS)
    b2 = list(tasks["b2"])
    b2[8] = 23  # started 13 → ended 23
    tasks["b2"] = tuple(b2)
    return tasks


def test_report_latest_run_id_and_format(two_runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--latest", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["run_id"] == "run-b"
    assert main(["report", "--run-id", "run-a", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["run_id"] == "run-a"
    assert main(["report", "--run-id", "run-a", "--json"]) == 0  # the alias
    assert json.loads(capsys.readouterr().out)["run"]["run_id"] == "run-a"
    assert main(["report", "--run-id", "run-a", "--format", "text"]) == 0
    assert capsys.readouterr().out.startswith("Run run-a")


def test_report_runs_dir_and_output(tmp_path: Path, synthetic: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    synthetic.write_run(elsewhere, "run-x")
    out = tmp_path / "report.json"
    assert main(["report", "--runs-dir", str(elsewhere), "--latest", "--format", "json", "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"Wrote the report to {out}." in captured.err
    assert json.loads(out.read_text())["tasks"]["total"] == 7


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["report", "run-a", "--run-id", "run-a"], "Name the run once"),
        (["report", "run-a", "--latest"], "Name the run once"),
        (["report", "--run-id", "some/path"], "not a path"),
        (["report", "--json", "--format", "text"], "--json is --format json"),
        (["compare", "run-a", "run-b", "--fail-if-slower", "-5"], "percentage"),
    ],
)
def test_contradictory_options_are_one_sentence(
    two_runs: tuple[Path, Path], argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_compare_format_and_output(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp.json"
    assert main(["compare", "run-a", "run-b", "--format", "json", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["b"]["run_id"] == "run-b"


def test_fail_if_slower_passes_for_equivalent_runs(
    two_runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", "run-a", "run-b", "--fail-if-slower", "20"]) == 0
    assert "slower" not in capsys.readouterr().err


def test_fail_if_slower_names_the_task_type_that_doubled(
    runs_dir: Path, synthetic: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    synthetic.write_run(runs_dir, "run-a")
    synthetic.write_run(runs_dir, "run-slow", tasks=_slow_fit(synthetic), start_offset=100)
    assert main(["compare", "run-a", "run-slow", "--fail-if-slower", "20", "--format", "json"]) == 1
    captured = capsys.readouterr()
    slower = json.loads(captured.out)["fail_if_slower"]["slower"]
    # fit doubled, and it is on the critical path, which grew by its extra 5 s.
    assert [s["what"] for s in slower] == ["task 'fit' mean execution", "critical path"]
    assert slower[0]["ratio"] == pytest.approx(2.0)
    assert "task 'fit' mean execution: 5.000s → 10.000s (+100.0%)" in captured.err
    # The same slowdown within a looser limit passes.
    assert main(["compare", "run-a", "run-slow", "--fail-if-slower", "150"]) == 0


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():  # type: ignore[union-attr]
        if name == "demo":
            continue
        for action in p._actions:
            assert action.help, f"otelflow {name} {action.option_strings or action.dest} has no help"


def _report_stderr(run_dir: Path, *, tty: bool) -> str:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    argv = [sys.executable, "-m", "otelflow", "report", str(run_dir)]
    if not tty:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=True)
        return done.stderr
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real terminal's size
    try:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=slave, env=env, timeout=120, check=True)
    finally:
        os.close(slave)
    chunks = []
    try:
        while data := os.read(master, 65536):
            chunks.append(data)
    except OSError:  # EIO: the terminal's other end is closed and everything was read
        pass
    finally:
        os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_stderr_only_when_it_is_a_terminal(run_dir: Path) -> None:
    pytest.importorskip("tqdm")
    assert "reading run" in _report_stderr(run_dir, tty=True)
    assert _report_stderr(run_dir, tty=False) == ""
