"""The package's shape: imports flow one way, and private SDK code is used in one module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[3] / "otelflow"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(path: Path) -> set[str]:
    """otelflow modules ``path`` imports at run time: at import or inside functions alike
    (a deferred import is still an edge), but not under ``TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("otelflow"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("otelflow"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                as_path = PKG.parent / sub.replace(".", "/")
                out.add(sub if as_path.with_suffix(".py").exists() or as_path.is_dir() else node.module)
    return out


def _graph() -> dict[str, set[str]]:
    graph = {_module_name(p): _runtime_imports(p) for p in PKG.rglob("*.py")}
    # Importing a.b.c first imports the packages a and a.b; a module's own enclosing packages
    # are already importing when it runs, so an edge to them is not a cycle of its making.
    for mod, deps in graph.items():
        deps.update(d.rsplit(".", i)[0] for d in list(deps) for i in range(1, d.count(".")))
        deps.difference_update({mod, *(mod.rsplit(".", i)[0] for i in range(1, mod.count(".") + 1))})
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                found.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                dfs(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    return found


def test_module_imports_form_no_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_events_and_config_import_nothing_above_them():
    graph = _graph()
    for mod, deps in graph.items():
        if mod.startswith(("otelflow.events", "otelflow.config")):
            above = {d for d in deps if not d.startswith(("otelflow.events", "otelflow.config"))}
            # leaves: they import nothing of otelflow's (checked below)
            above -= {"otelflow", "otelflow.errors", "otelflow._global", "otelflow._version", "otelflow.validate"}
            assert not above, f"{mod} imports {sorted(above)}"


def test_the_leaf_modules_import_nothing_of_otelflow():
    graph = _graph()
    for leaf in ("otelflow.errors", "otelflow._version", "otelflow.validate"):
        assert graph[leaf] <= {"otelflow"}, f"{leaf} imports {sorted(graph[leaf])}"


_PRIVATE_SDK = re.compile(r"opentelemetry[\w.]*\._\w|\breader\._\w|_Histogram|_set_collect_callback")


def test_private_opentelemetry_code_is_used_only_in_the_compat_module():
    offenders = []
    for path in PKG.rglob("*.py"):
        if path.name == "_otel_compat.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if _PRIVATE_SDK.search(code) and "``" not in code:
                offenders.append(f"{path.relative_to(PKG.parent)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
