"""The package's layers: data flows one way. Every flexwm import (module level or inside a function) goes from a
higher layer to a lower one or stays inside its own layer, and no import circle exists between modules."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "flexwm"

# lowest first; a module may import from its own layer or any layer before it
LAYERS = [
    ["errors", "io", "config", "metrics", "runs"],
    ["data"],
    ["envs", "collect"],
    ["models"],
    ["training"],
    ["inference"],
    ["planning"],
    ["rl"],
    ["evaluation"],
    ["report"],
    ["demo", "api", "cli", "__init__", "__main__"],
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """module -> flexwm modules it imports (resolved to existing modules or packages)."""
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for mod, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flexwm"):
                names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("flexwm")]
            for name in names:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name and name != mod and name != "flexwm":
                    deps.add(name)
        out[mod] = deps
    return out


def _layer(mod: str) -> int:
    parts = mod.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    assert key in RANK, f"{mod}: add its top-level name {key!r} to LAYERS in {__file__}"
    return RANK[key]


def test_no_import_runs_up_the_layers():
    bad = [f"{m} -> {d}" for m, deps in _imports().items() for d in deps if _layer(d) > _layer(m)]
    assert not bad, "imports that run up the layers:\n" + "\n".join(sorted(bad))


def test_no_import_circle():
    graph = _imports()
    # a module importing its own package (`flexwm.planning.wam` -> `flexwm.planning`) is not counted: the
    # package's __init__ imports its modules, and Python resolves that order
    def edges(m: str) -> set[str]:
        return {d for d in graph[m] if not m.startswith(d + ".")}

    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges(m)):
            if state.get(d) == 1:
                circles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The layer test can fail: a low module importing a high one is reported."""
    pkg = tmp_path / "flexwm"
    (pkg / "data").mkdir(parents=True)
    (pkg / "report").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("def f():\n    from flexwm.report import x\n")
    (pkg / "report" / "__init__.py").write_text("x = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
    try:
        test_no_import_runs_up_the_layers()
    except AssertionError as e:
        assert "flexwm.data -> flexwm.report" in str(e)
    else:
        raise AssertionError("an upward import went unnoticed")
