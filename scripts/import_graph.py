"""Print Trove's import graph: package to package, file-level cycles, function-level imports.

    .venv/bin/python scripts/import_graph.py [--json]

Reads the source with the standard library's ``ast`` (nothing is imported), so it
runs on any checkout, old or new: the closing note of issue 19 compares two.
The layer contract itself is checked by ``lint-imports`` (pyproject.toml).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

PACKAGES = ("core", "connectors", "retrieval", "pipelines", "assets", "trove")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, known: set[str]) -> str | None:
    """The longest known module that ``module`` names (``a.b.c`` may be a name in ``a.b``)."""
    while module:
        if module in known:
            return module
        module = module.rpartition(".")[0]
    return None


def collect(root: Path) -> tuple[list[tuple[str, str, bool]], set[str]]:
    """(importer, imported, inside a function) for every first-party import."""
    files = {
        _module_name(root, path): path
        for package in PACKAGES
        if (root / package).is_dir()
        for path in sorted((root / package).rglob("*.py"))
    }
    known = set(files)
    imports: list[tuple[str, str, bool]] = []
    for importer, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        _walk(
            tree, importer, known, imports, in_function=False, is_package=path.name == "__init__.py"
        )
    return imports, known


def _walk(node, importer, known, out, *, in_function, is_package) -> None:
    for child in ast.iter_child_nodes(node):
        inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue  # annotations only: never executed
        targets: list[str] = []
        if isinstance(child, ast.Import):
            targets = [alias.name for alias in child.names]
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                package = importer if is_package else importer.rpartition(".")[0]
                for _ in range(child.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}".strip(".")
            targets = [f"{base}.{alias.name}" for alias in child.names] or [base]
        for target in targets:
            resolved = _resolve(target, known)
            if resolved and resolved != importer:
                out.append((importer, resolved, inner))
        _walk(child, importer, known, out, in_function=inner, is_package=is_package)


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


# `trove` holds two layers: the composition (Settings and its wiring), which Dagster's
# assets use, and the application (CLI, commands, benchmarks) on top of the assets.
COMPOSITION = ("trove.config", "trove.wiring")


def _layer_unit(module: str) -> str:
    """The package a module belongs to, with trove's composition modules apart."""
    if module in ("trove", *COMPOSITION) or module.startswith(tuple(m + "." for m in COMPOSITION)):
        return "trove[config,wiring]"
    return module.split(".")[0]


def report(root: Path) -> dict:
    imports, known = collect(root)
    top = _layer_unit
    packages = Counter((top(a), top(b)) for a, b, _ in imports if top(a) != top(b))
    module_edges = {(a, b) for a, b, _ in imports}
    # A package's __init__ importing its own modules is not a cycle anyone can break.
    file_edges = {(a, b) for a, b in module_edges if not b.startswith(a + ".")}
    return {
        "modules": len(known),
        "first_party_imports": len(imports),
        "inside_functions": sum(1 for *_, inner in imports if inner),
        "inside_functions_by_package": dict(
            sorted(Counter(top(a) for a, _, inner in imports if inner).items())
        ),
        "package_edges": {f"{a} -> {b}": n for (a, b), n in sorted(packages.items())},
        "package_cycles": _cycles(set(packages)),
        "file_cycles": _cycles(file_edges),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=".", type=Path, help="a Trove checkout")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    result = report(args.root.resolve())
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['modules']} modules, {result['first_party_imports']} first-party imports, "
        f"{result['inside_functions']} inside functions {result['inside_functions_by_package']}"
    )
    print("package -> package (imports):")
    for edge, count in result["package_edges"].items():
        print(f"  {edge}: {count}")
    print(f"package cycles: {result['package_cycles'] or 'none'}")
    print(f"file cycles: {len(result['file_cycles'])}")
    for cycle in result["file_cycles"]:
        print("  " + " <-> ".join(cycle))


if __name__ == "__main__":
    main()
