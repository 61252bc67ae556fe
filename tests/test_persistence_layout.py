"""The persistence engine is one package, ``fast.persistence``, with one front door, and neither ``fast``
nor ``train`` has an import cycle.

Claims checked, by reading the sources with ``ast`` (nothing is imported, except in the last test):
- no module under ``fast/`` or under ``train/`` imports a module that imports it, directly or
  through others. Imports inside functions count (a lazy import closes the cycle when it runs),
  and so does the table of names that ``fast/__init__.py`` loads lazily (``_EXPORTS``);
- the engine backends are plain imports: no module of ``fast/persistence/`` loads modules by
  name (``importlib``, ``__import__``);
- outside ``fast/persistence/``, the code (``fast/``, ``train/``, ``benchmarks/``, ``tests/``)
  imports the front door ``fast.persistence`` only, apart from the internal stages listed in
  ``INTERNAL_IMPORTS``, which the tests of those kernels import on purpose;
- every module of the package says in its docstring which part of the paper it implements;
- importing the front door does not import torch (the worker processes import it).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "fast.persistence"
SCANNED = ("fast", "train", "benchmarks", "tests")

# (file, module of fast.persistence it may import besides the front door): why.
INTERNAL_IMPORTS = {
    ("tests/test_native_engine.py", "fast.persistence.device_stage"): "batched device stage vs compiled stage",
    ("tests/test_native_engine.py", "fast.persistence.edge_stage"): "the compiled per-cloud stage itself",
    ("tests/test_native_engine.py", "fast.persistence.reduction"): "the reduction kernel's own deadline check",
    ("tests/test_native_engine.py", "fast.persistence.native"): "the reduction of a truncated stage (decision 36)",
    ("tests/test_device_batch.py", "fast.persistence.device_stage"): "the batch path's own distances for the reference",
    ("tests/test_fast_engine.py", "fast.persistence.cloud"): "the workers' distance matrix against scipy's cdist",
    ("tests/test_persistence_start.py", "fast.persistence.worker"): "the warm-up parts and their shares",
    ("tests/test_persistence_start.py", "fast.persistence.edge_stage"): "the warm-up cloud takes the truncated path",
    ("tests/test_persistence_spawn.py", "fast.persistence.pool"): "the pool's spawn seam and its retries (decision 41)",
    ("tests/test_cloud_threads.py", "fast.persistence.cloud"): "one cloud's distances and body on threads (decision 89)",
    ("tests/test_cloud_threads.py", "fast.persistence.edge_stage"): "every edge stage array on threads (decision 89)",
    ("tests/test_cloud_threads.py", "fast.persistence.ranges"): "the row ranges, and no helper thread for one",
    ("benchmarks/cpu/isotropic_h1.py", "fast.persistence.cloud"): "a worker's per-cloud body, its distances timed (decision 83)",
    ("benchmarks/cpu/isotropic_h1.py", "fast.persistence.edge_stage"): "the edge stage's kernels timed one by one",
    ("benchmarks/cpu/isotropic_h1.py", "fast.persistence.native"): "the reduction kernel timed where the engine calls it",
    ("benchmarks/cpu/isotropic_h1.py", "fast.persistence.worker"): "a worker's memory setting for the wall times (decision 89)",
}


def module_name(path: Path) -> str:
    """``fast/persistence/pool.py`` -> ``fast.persistence.pool``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_in(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules that the module ``name`` (its ``source``) imports, wherever the statement stands.

    ``from m import x`` counts as importing ``m.x`` when that is a module in ``known``, else ``m``;
    relative imports are resolved against ``name``; the string values of a module-level
    ``_EXPORTS = {...}`` table (names loaded lazily by module name) count as imports too.
    """
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in targets):
                found.update(v.value for v in node.value.values if isinstance(v, ast.Constant))
    return found


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None if it has none."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def _sources(*folders: str) -> list[Path]:
    return sorted(p for d in folders for p in (ROOT / d).rglob("*.py"))


def _import_graph(paths: list[Path], known: set[str]) -> dict[Path, set[str]]:
    return {p: imports_in(p.read_text(encoding="utf-8"), module_name(p), p.name == "__init__.py", known) for p in paths}


@pytest.mark.parametrize("package, at_least", [("fast", 15), ("train", 40)])
def test_no_module_of_a_package_imports_a_module_that_imports_it(package: str, at_least: int) -> None:
    paths = _sources(package)
    known = {module_name(p) for p in paths}
    assert len(known) > at_least, "the scan found too few modules; did the layout change?"
    graph = {module_name(p): targets & known for p, targets in _import_graph(paths, known).items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_engine_package_loads_no_module_by_name() -> None:
    found = []
    for path in _sources("fast/persistence"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            imports_importlib = (isinstance(node, ast.Import) and any(a.name == "importlib" for a in node.names)) or (
                isinstance(node, ast.ImportFrom) and node.module == "importlib"
            )
            if imports_importlib or (isinstance(node, ast.Name) and node.id == "__import__"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "by-name module loading in the engine package (import the backend instead): " + ", ".join(found)


def test_code_outside_the_package_imports_only_its_front_door() -> None:
    paths = _sources(*SCANNED)
    known = {module_name(p) for p in paths}
    inside = [p for p in paths if module_name(p).startswith(PACKAGE + ".") or module_name(p) == PACKAGE]
    assert len(inside) >= 8, "the engine package has fewer modules than expected; did the layout change?"
    used, found = set(), []
    for path, targets in _import_graph([p for p in paths if p not in inside], known).items():
        rel = path.relative_to(ROOT).as_posix()
        for target in sorted(t for t in targets if t.startswith(PACKAGE + ".")):
            if (rel, target) in INTERNAL_IMPORTS:
                used.add((rel, target))
            else:
                found.append(f"{rel} imports {target}")
    assert not found, f"import these from the front door {PACKAGE} instead:\n" + "\n".join(found)
    assert used == set(INTERNAL_IMPORTS), f"stale INTERNAL_IMPORTS entries: {sorted(set(INTERNAL_IMPORTS) - used)}"


def test_every_engine_module_says_which_part_of_the_paper_it_implements() -> None:
    for path in _sources("fast/persistence"):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        assert "Algorithm" in doc, f"{path.relative_to(ROOT)}: the module docstring names no paper algorithm"


def test_the_import_reader_sees_lazy_relative_submodule_and_table_imports() -> None:
    source = (
        "from fast.x.d import thing\n"
        "def f():\n"
        "    from . import b\n"
        "    import fast.x.c as c\n"
        "    from .. import other\n"
        "_EXPORTS: dict = {'name': 'fast.x.e'}\n"
    )
    known = {"fast.x", "fast.x.b", "fast.x.c", "fast.x.d", "fast.x.e"}
    assert imports_in(source, "fast.x.a", False, known) == {"fast.x.b", "fast.x.c", "fast.x.d", "fast.x.e", "fast"}


def test_the_cycle_finder_finds_a_planted_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"pkg": {"pkg.x", "pkg.y"}, "pkg.x": {"pkg.y"}, "pkg.y": set()}) is None


def test_importing_the_front_door_does_not_import_torch() -> None:
    code = "import sys, fast.persistence; assert 'torch' not in sys.modules, 'fast.persistence imports torch'"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
