"""The Python examples in the README and the user docs run as written."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

from otelflow import _global

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *(ROOT / "docs" / n for n in ("getting-started.md", "executors.md", "exporters.md", "analysis.md")),
]
# A block preceded by `<!-- not run ... -->` is skipped (it needs something not here); one
# preceded by `<!-- needs MODULE -->` runs where MODULE (an optional extra) is installed.
BLOCK = re.compile(r"^(<!-- (not run|needs ([\w.]+))[^\n]*-->\n)?```python\n(.*?)^```", re.S | re.M)


def _examples():
    for doc in DOCS:
        prelude = ""  # a doc's blocks run in order, each after the ones before it
        for i, m in enumerate(BLOCK.finditer(doc.read_text())):
            if m.group(2) == "not run":
                continue
            yield pytest.param(prelude + m.group(4), m.group(3), id=f"{doc.name}-{i}")
            if doc.name == "analysis.md":
                prelude += m.group(4)


EXPECTED = re.compile(r"^print\(.*\)\s+#\s*(.+?)\s*$", re.M)


@pytest.mark.parametrize(("code", "needs"), list(_examples()))
def test_example_runs_and_prints_what_it_says(code, needs, tmp_path, monkeypatch, capsys):
    if needs:
        pytest.importorskip(needs)
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
