"""The Python examples in the README and the user docs run as written."""

from __future__ import annotations

import importlib.util
import re
import runpy
from pathlib import Path

import pytest

from otelflow import _global

ROOT = Path(__file__).resolve().parents[1]
# Every page: a new docs/*.md is run without being listed here.
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A block preceded by `<!-- not run ... -->` is skipped (it needs something not here); one
# preceded by `<!-- needs MODULE -->` runs only where MODULE can be imported.
# Pages whose blocks continue one another (a notebook-style walk): each runs after the ones before.
CUMULATIVE = {"analysis.md"}
BLOCK = re.compile(r"^(<!-- (not run|needs ([\w.]+))[^\n]*-->\n)?```python\n(.*?)^```", re.S | re.M)


def _examples():
    for doc in DOCS:
        prelude = ""  # on CUMULATIVE pages, the blocks before this one
        for i, m in enumerate(BLOCK.finditer(doc.read_text())):
            if m.group(2) == "not run":
                continue
            marks = []
            if m.group(3):
                needed = m.group(3)
                present = importlib.util.find_spec(needed.split(".")[0]) is not None
                marks.append(pytest.mark.skipif(not present, reason=f"needs {needed}"))
            yield pytest.param(prelude + m.group(4), id=f"{doc.name}-{i}", marks=marks)
            if doc.name in CUMULATIVE:
                prelude += m.group(4)


EXPECTED = re.compile(r"^print\(.*\)\s+#\s*(.+?)\s*$", re.M)


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
    assert list(tmp_path.rglob("run.json")), "the example wrote no run directory"
    printed = capsys.readouterr().out.splitlines()
    for expected in EXPECTED.findall(code):  # `print(x)  # value` comments are checked
        assert expected in printed
