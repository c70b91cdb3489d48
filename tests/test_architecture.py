"""The package's shape, read from its imports (module level and inside functions) with `ast`.

Layers, bottom to top (docs/architecture.md): base (errors, fileops, report) -> load -> collect
-> rules -> transforms -> api -> cli, with the facade (`dldoctor/__init__.py`, `__main__.py`) on
top. A module imports its own layer and the layers below. render is a side branch: it reads only
base, and only api, cli and the facade read it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "dldoctor"
MAX_LINES = 1500

# room -> layer; render sits beside the stack (see _allowed)
LAYERS = {"base": 0, "load": 1, "collect": 2, "rules": 3, "transforms": 4, "api": 5, "cli": 6, "facade": 7}
BASE_MODULES = {"dldoctor.errors", "dldoctor._version", "dldoctor.fileops"}
ROOMS = {"report", "load", "collect", "rules", "transforms", "api", "render", "cli", "integrations"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out[name] = path
    return out


MODULES = _modules()


def room(module: str) -> str:
    """The room a module lives in: report/load/... or base or facade; None outside every room."""
    if module in ("dldoctor", "dldoctor.__main__"):
        return "facade"
    if module in BASE_MODULES:
        return "base"
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ROOMS:
        return "base" if parts[1] == "report" else parts[1]
    return "outside"


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every dldoctor module this one imports, at module level or inside functions."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                full = base + ("." + node.module if node.module else "")
            else:
                full = node.module or ""
            targets = [f"{full}.{a.name}" if f"{full}.{a.name}" in MODULES else full for a in node.names]
        for t in targets:
            if t == "dldoctor" or t.startswith("dldoctor."):
                r = _resolve(t)
                if r and r != module:
                    found.add(r)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def _allowed(src: str, dst: str) -> bool:
    a, b = room(src), room(dst)
    if b == "render":
        return a in ("render", "api", "cli", "facade", "integrations")
    if a == "render":
        return b in ("render", "base")
    if a == "integrations":  # trainer callbacks sit beside the cli, on top of api
        return b in ("base", "load", "collect", "rules", "transforms", "api", "integrations")
    if b == "integrations":
        return a == "integrations"
    return LAYERS[b] <= LAYERS[a]


def test_every_module_lives_in_a_room():
    outside = sorted(m for m in MODULES if room(m) == "outside")
    assert not outside, f"modules outside the rooms of docs/architecture.md: {outside}"


def test_no_import_against_the_layer_order():
    bad = sorted(f"{s} ({room(s)}) -> {d} ({room(d)})" for s, ds in GRAPH.items() for d in ds if not _allowed(s, d))
    assert not bad, "imports against the flow:\n" + "\n".join(bad)


def test_no_import_cycle_between_files():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_file_over_the_size_limit():
    big = {str(p.relative_to(PKG.parent)): n for p in PKG.rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big, f"files over {MAX_LINES} lines: {big}"


def test_the_checker_catches_what_it_must():
    """The checks above are not vacuous: a planted bad import and a planted module are caught."""
    assert not _allowed("dldoctor.collect.graph", "dldoctor.rules.engine")
    assert not _allowed("dldoctor.render.json", "dldoctor.api.inspect")
    assert not _allowed("dldoctor.load.detect", "dldoctor.collect.trace")
    assert _allowed("dldoctor.cli.inspect", "dldoctor.render.json")
    assert room("dldoctor.checker") == "outside" and room("dldoctor.api.judge") == "api"
    assert len(GRAPH) > 50 and sum(map(len, GRAPH.values())) > 150  # the import reader sees the package


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
