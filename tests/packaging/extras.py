"""What an install with only some extras can import, simulated in the full virtualenv.

:func:`allowed_distributions` resolves ``trove[EXTRAS]`` against pyproject.toml and
the installed packages' own metadata (their requirements and markers);
:func:`run_with_only` runs Python code in a child process where every installed
top-level module outside that set raises ``ModuleNotFoundError``, as it would in
a virtualenv holding only those distributions. Optional imports
(``try: import rich``) degrade as they would there; required ones fail.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = canonicalize_name("trove")
FIRST_PARTY = ("core", "connectors", "retrieval", "pipelines", "assets", "trove", "tests")


def project_table() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    if requirement.marker is None:
        return True
    environment = dict(default_environment())
    return any(
        requirement.marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras)
    )


def project_requirements(extras: Iterable[str]) -> list[Requirement]:
    """The base dependencies plus ``extras``' own, self-references (``trove[cli]``) expanded."""
    project = project_table()
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    requirements = [Requirement(text) for text in project["dependencies"]]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise KeyError(f"pyproject.toml declares no extra {extra!r}")
        seen.add(extra)
        for text in optional[extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == PROJECT:
                pending.extend(requirement.extras)
            else:
                requirements.append(requirement)
    return requirements


def allowed_distributions(extras: Iterable[str]) -> set[NormalizedName]:
    """Every distribution ``pip install 'trove[EXTRAS]'`` brings, by canonical name.

    Distributions required but not installed here (``torchvision``, removed by
    ``make setup``) are skipped: the child process cannot import them either.
    """
    allowed: set[NormalizedName] = {PROJECT}
    pending = [
        (requirement, frozenset(requirement.extras)) for requirement in project_requirements(extras)
    ]
    visited: set[tuple[NormalizedName, frozenset[str]]] = set()
    while pending:
        requirement, wanted = pending.pop()
        name = canonicalize_name(requirement.name)
        if (name, wanted) in visited:
            continue
        visited.add((name, wanted))
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        allowed.add(name)
        for text in distribution.requires or []:
            child = Requirement(text)
            if _applies(child, wanted):
                pending.append((child, frozenset(child.extras)))
    return allowed


def blocked_modules(allowed: set[NormalizedName]) -> list[str]:
    """Installed top-level modules that no distribution in ``allowed`` provides."""
    blocked = []
    for module, distributions in metadata.packages_distributions().items():
        if module in FIRST_PARTY or module.startswith("__editable__"):
            continue
        if not any(canonicalize_name(name) in allowed for name in distributions):
            blocked.append(module)
    return sorted(blocked)


_BLOCKER = """\
import sys

BLOCKED = frozenset({blocked!r})


class OnlyTheExtras:
    # Wraps each finder: a blocked module is found by none, as if not installed
    # (find_spec answers None, so probes like importlib.util.find_spec see it absent).
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find is not None else None

    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)


sys.meta_path[:] = [OnlyTheExtras(finder) for finder in sys.meta_path]
"""


def run_with_only(
    extras: Iterable[str], code: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child Python that can import only what ``trove[EXTRAS]`` installs."""
    blocked = blocked_modules(allowed_distributions(extras))
    preamble = _BLOCKER.format(blocked=blocked)
    return subprocess.run(
        [sys.executable, "-c", preamble + "\n" + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
