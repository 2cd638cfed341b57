"""``otelflow.analysis`` needs a run directory, never a live session; optional libs stay lazy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import otelflow.analysis

ALLOWED = ("otelflow.analysis", "otelflow.errors", "otelflow.events")
PACKAGE = Path(otelflow.analysis.__file__).parent


def _otelflow_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {n for n in names if n == "otelflow" or n.startswith("otelflow.")}


def test_analysis_imports_only_events_and_errors_of_otelflow() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        bad = {n for n in _otelflow_imports(path) if not n.startswith(ALLOWED)}
        assert not bad, f"{path.name} imports {bad}"


def test_matplotlib_and_exporters_are_imported_only_when_used() -> None:
    code = (
        "import sys, otelflow.analysis, otelflow.cli.main; "
        "print(sorted(m for m in sys.modules if m.startswith(('matplotlib', 'opentelemetry.exporter.otlp'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
