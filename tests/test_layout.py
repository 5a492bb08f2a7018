"""The package's layout (docs/architecture.md): imports point down and never in a circle.

The imports of every module of ``refbench/`` and ``analysis/`` are read with ``ast`` (those
inside functions too: a deferred import is still a dependency), so nothing is imported here.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("refbench", "analysis")
# refbench.method is the paper's math: torch (and numpy) in, tensors out
METHOD_THIRD_PARTY = {"torch", "numpy"}
# Small enough to read in one sitting, counted on ruff-formatted code (which puts a call's
# arguments one per line when they do not fit): 400 lines of the earlier dense style.
MAX_LINES = 500


def module_files(root: Path, packages=PACKAGES) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def imported_names(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known) -> list[str]:
    """Absolute names an import statement reaches: ``from a import b`` reaches module a.b when
    there is one, else a."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".")[: None if is_package else -1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in known else prefix for alias in node.names]


def import_graph(root: Path, packages=PACKAGES) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between the packages' own modules, every top-level name each module imports)."""
    modules = module_files(root, packages)
    edges, external = {}, {}
    for module, (path, is_package) in modules.items():
        edges[module], external[module] = set(), set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in imported_names(module, is_package, node, modules):
                    external[module].add(name.split(".")[0])
                    if name in modules and name != module:
                        edges[module].add(name)
                    elif name not in modules and name.split(".")[0] in packages:
                        edges[module].add(name)  # e.g. a module that does not exist: still ours
    return edges, external


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a path
    that starts and ends at the same module."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(_cycle_path(sorted(component), edges))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for node in sorted(edges):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return cycles


def _cycle_path(component: list[str], edges) -> list[str]:
    """One circle through the component's first module, for a readable failure message."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    return paths[node] + [start]
                if nxt in members and nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    return component


def test_no_import_circles():
    edges, _ = import_graph(ROOT)
    cycles = find_cycles(edges)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_circle_finder_finds_a_circle_made_on_purpose(tmp_path):
    """a imports b (inside a function), b imports c, c imports a back through ``from . import``:
    one circle a -> b -> c -> a. d imports a but nothing imports d, so d is not in it."""
    package = tmp_path / "refbench"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from .sub import b\n")
    (package / "sub" / "b.py").write_text("from refbench.sub.c import thing\n")
    (package / "sub" / "c.py").write_text("from .. import a\nthing = 1\n")
    (package / "d.py").write_text("from . import a\n")
    edges, _ = import_graph(tmp_path, packages=("refbench",))
    assert edges["refbench.a"] == {"refbench.sub.b"}
    assert edges["refbench.sub.c"] == {"refbench.a"}
    assert find_cycles(edges) == [["refbench.a", "refbench.sub.b", "refbench.sub.c", "refbench.a"]]


def test_method_is_pure_math():
    """refbench.method imports only the standard library, torch, numpy and itself: no store,
    no duckdb, typer or diffusers, nothing from the stages above it."""
    edges, external = import_graph(ROOT)
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for module in (m for m in edges if m.startswith("refbench.method")):
        outside = {name for name in edges[module] if not name.startswith("refbench.method")}
        assert not outside, f"{module} imports {sorted(outside)}"
        third_party = external[module] - stdlib - METHOD_THIRD_PARTY - {"refbench"}
        assert not third_party, f"{module} imports {sorted(third_party)}"


@pytest.mark.parametrize(
    "lower, upper",
    [
        ("refbench.method", "refbench.training"),
        ("refbench.method", "refbench.evaluation"),
        ("refbench.training", "refbench.experiments"),
        ("refbench.evaluation", "refbench.experiments"),
        ("refbench.training", "refbench.evaluation"),
        ("refbench.training", "refbench.cli"),
        ("refbench.evaluation", "refbench.cli"),
        ("refbench.experiments", "refbench.cli"),
        ("analysis", "refbench.cli"),
        ("analysis", "refbench.training"),
    ],
)
def test_imports_point_down(lower, upper):
    """A lower stage never imports a higher one (analysis reads the store and never trains)."""
    edges, _ = import_graph(ROOT)
    wrong = [
        (m, n)
        for m, targets in edges.items()
        if m == lower or m.startswith(lower + ".")
        for n in targets
        if n == upper or n.startswith(upper + ".")
    ]
    assert not wrong, f"{lower} imports {upper}: {wrong}"


def test_only_the_app_assembles_the_cli():
    """The command groups never import the module that assembles the app."""
    edges, _ = import_graph(ROOT)
    importers = sorted(m for m, targets in edges.items() if "refbench.cli.app" in targets)
    assert importers == ["refbench.__main__"]


def test_files_stay_readable_in_one_sitting():
    too_long = {
        str(path.relative_to(ROOT)): n
        for path, _ in module_files(ROOT).values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not too_long, f"files over {MAX_LINES} lines: {too_long}"
