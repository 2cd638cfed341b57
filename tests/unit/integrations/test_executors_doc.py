"""The Python examples in docs/executors.md run as written and print what they say."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

from otelflow import _global

DOC = Path(__file__).resolve().parents[3] / "docs" / "executors.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
EXPECTED = re.compile(r"^\s*print\(.*\)\s+#\s*(.+?)\s*$", re.M)


def _examples():
    for i, m in enumerate(BLOCK.finditer(DOC.read_text())):
        yield pytest.param(m.group(1), id=f"executors-{i}")


@pytest.mark.parametrize("code", list(_examples()))
def test_example_runs_and_prints_what_it_says(code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "example.py"
    script.write_text(code)
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        tel = _global.current()
        if tel is not None:
            tel.stop(timeout=5)
    assert (tmp_path / "telemetry").is_dir()
    printed = capsys.readouterr().out.splitlines()
    expected = EXPECTED.findall(code)
    assert expected, "each example shows what it prints"
    for line in expected:
        assert line in printed
