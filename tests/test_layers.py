"""The layer contract (docs/architecture.md#layers) holds, and no import hides in a
function to dodge it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from import_graph import PACKAGES, collect, report  # noqa: E402

# The application layer imports inside its commands so that `trove --help` and an
# idle `trove ingest` start fast (docs/architecture.md#layers): allowed wholesale.
APPLICATION = (
    "trove.cli",
    "trove.commands",
    "trove.bench",
    "trove.demo",
    "trove.ingest",
    "trove.status",
)
LAZY_MARK = "# lazy:"


def test_lint_imports_keeps_every_contract():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_package_or_file_cycles():
    graph = report(ROOT)
    assert graph["package_cycles"] == []
    assert graph["file_cycles"] == []


def _function_level_imports(path: Path) -> list[int]:
    lines: list[int] = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(name.split(".")[0] in PACKAGES for name in names):
                lines.append(node.lineno)
    return sorted(set(lines))


def test_below_the_application_an_import_in_a_function_says_why():
    """Only a deferred heavy import may sit in a function, and it says so (``# lazy: why``)."""
    unexplained = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            if module.startswith(APPLICATION):
                continue
            source = path.read_text(encoding="utf-8").splitlines()
            for line in _function_level_imports(path):
                nearby = source[max(0, line - 3) : line]
                if not any(LAZY_MARK in text for text in nearby):
                    unexplained.append(
                        f"{path.relative_to(ROOT)}:{line}: {source[line - 1].strip()}"
                    )
    assert unexplained == [], "\n".join(unexplained)


def test_the_graph_script_sees_every_module():
    imports, modules = collect(ROOT)
    assert {"core.acl", "trove.wiring", "retrieval.embedding.config"} <= modules
    assert any(a.startswith("pipelines") and b.startswith("retrieval") for a, b, _ in imports)
