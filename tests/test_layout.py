"""The library's layout: layers import downward only, no module imports itself through a cycle, files stay short.

Every ``import lmcal...`` counts, including the lazy ones inside functions: a lazy import hides a cycle from the
interpreter but not from a reader. ``LAYERS`` is the contract written in ``workflow/README.md`` (module map).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "workflow" / "lmcal"

# package -> the packages it may import (besides itself). Shared layers first, then the studies.
LAYERS: dict[str, set[str]] = {
    "core": set(),
    "scaling": {"core"},
    "losses": {"core"},
    "data": {"core"},
    "models": {"core", "data"},
    "lm": {"core", "models", "losses"},
    "workflow": {"core"},
    "ladder": {"core", "data", "models", "lm", "scaling"},
    "calibration": {"core", "data", "models", "lm"},
    "entropy": {"core", "data", "models", "lm", "scaling"},
    "sft": {"core", "data", "models", "lm", "losses", "calibration"},
    "emergence": {"core", "data", "models", "lm", "scaling", "calibration"},
    "report": {"core"},  # reads the studies' summary JSON, never their code
}
TORCH_FREE = {"core", "workflow"}  # imported when Snakemake parses the rule files
MAX_LINES = 400


def module_name(path: Path, lib: Path = LIB) -> str:
    parts = list(path.relative_to(lib.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lmcal_imports(path: Path, lib: Path = LIB) -> list[tuple[str, int, bool]]:
    """(imported lmcal module, line, at module top level) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    me = module_name(path, lib)
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top) for a in node.names if a.name.startswith("lmcal")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = me.split(".")[: len(me.split(".")) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("lmcal"):
                continue
            for a in node.names:  # `from lmcal.x import y` imports lmcal.x.y when y is a module
                sub = f"{mod}.{a.name}"
                sub_path = lib.parent / Path(*sub.split("."))
                target = sub if sub_path.with_suffix(".py").exists() or sub_path.is_dir() else mod
                out.append((target, node.lineno, id(node) in top))
    return out


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


MODULES = sorted(LIB.rglob("*.py"))


def test_every_module_belongs_to_a_known_layer():
    unknown = {package_of(module_name(p)) for p in MODULES} - set(LAYERS) - {None}
    assert not unknown, f"packages missing from LAYERS (and the module map in workflow/README.md): {unknown}"


def test_layers_import_downward_only():
    bad = []
    for path in MODULES:
        pkg = package_of(module_name(path))
        if pkg is None:
            continue
        for target, line, _ in lmcal_imports(path):
            tpkg = package_of(target)
            if tpkg is not None and tpkg != pkg and tpkg not in LAYERS[pkg]:
                bad.append(f"{path.relative_to(LIB)}:{line} imports {target} ({pkg} may import {sorted(LAYERS[pkg])})")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_layer_table_has_no_cycle():
    seen: dict[str, int] = {}

    def visit(pkg: str, stack: tuple[str, ...]) -> None:
        assert pkg not in stack, f"layer cycle: {' -> '.join(stack + (pkg,))}"
        for dep in LAYERS[pkg]:
            visit(dep, stack + (pkg,))

    for pkg in LAYERS:
        visit(pkg, ())
        seen[pkg] = 1


def test_no_module_import_cycle():
    graph: dict[str, set[str]] = {module_name(p): set() for p in MODULES}
    for path in MODULES:
        me = module_name(path)
        for target, _, _ in lmcal_imports(path):
            # importing lmcal.a.b also runs lmcal.a's __init__
            for i in range(2, len(target.split(".")) + 1):
                dep = ".".join(target.split(".")[:i])
                if dep in graph and dep != me and not me.startswith(dep + "."):
                    graph[me].add(dep)
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, stack + [dep])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_parse_time_layers_import_no_heavy_library_at_top_level():
    heavy = {"torch", "transformers", "mlflow", "pandas", "numpy", "scipy", "matplotlib", "seaborn", "datasets"}
    bad = []
    for path in MODULES:
        if package_of(module_name(path)) not in TORCH_FREE:
            continue
        tree = ast.parse(path.read_text())
        for node in tree.body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            bad += [f"{path.relative_to(LIB)}:{node.lineno} {n}" for n in names if n.split(".")[0] in heavy]
    assert not bad, "parse-time modules must import heavy libraries inside functions:\n" + "\n".join(bad)


def test_no_library_file_over_the_line_limit():
    long = {str(p.relative_to(LIB)): n for p in MODULES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (split them by idea): {long}"


def test_the_checker_sees_planted_upward_and_relative_imports(tmp_path):
    """The graph reader must catch a lazy upward edge and resolve a relative one; else the tests above prove nothing."""
    fake = tmp_path / "lmcal"
    for d in (fake / "core", fake / "sft"):
        d.mkdir(parents=True)
        (d / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "sft" / "train.py").write_text("from . import util\nfrom .util import g\n")
    (fake / "sft" / "util.py").write_text("def g():\n    pass\n")
    (fake / "core" / "io.py").write_text("import json\n\n\ndef f():\n    from lmcal.sft import train\n")
    assert lmcal_imports(fake / "core" / "io.py", fake) == [("lmcal.sft.train", 5, False)]
    assert "sft" not in LAYERS["core"]
    assert lmcal_imports(fake / "sft" / "train.py", fake) == [("lmcal.sft.util", 1, True), ("lmcal.sft.util", 2, True)]
