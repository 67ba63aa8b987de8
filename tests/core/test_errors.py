"""One error root: every exception class Trove defines derives from
:class:`core.errors.TroveError`, and no class of Trove's takes a builtin's name.

Every module of every package is imported (a module that fails to import fails
the test), then every exception class whose module is Trove's is checked, wherever
it is defined: at the top of a module, inside a class or inside a function.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from functools import cache
from types import ModuleType

import pytest

from core.errors import ConfigError, TroveError

PACKAGES = ("core", "connectors", "pipelines", "retrieval", "assets", "trove")

# Modules that are not imported to be inspected, and why.
NOT_IMPORTED = {
    "trove.__main__": "runs the CLI when imported; it defines nothing",
}

# Exception classes allowed outside the root ("module.Class": why). None today; a
# control-flow exception that must slip past every `except TroveError` would go here.
OUTSIDE_THE_ROOT: dict[str, str] = {}

BUILTIN_NAMES = frozenset(dir(builtins))


def _walked(package: str) -> list[str]:
    root = importlib.import_module(package)
    return [package, *(info.name for info in pkgutil.walk_packages(root.__path__, f"{package}."))]


@cache
def trove_modules() -> tuple[ModuleType, ...]:
    """Every module of the packages, imported; an import error fails the caller."""
    names = [name for package in PACKAGES for name in _walked(package)]
    return tuple(importlib.import_module(name) for name in names if name not in NOT_IMPORTED)


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _is_trove(cls: type) -> bool:
    return cls.__module__.split(".", 1)[0] in PACKAGES


def trove_exceptions() -> set[type[BaseException]]:
    trove_modules()
    return {cls for cls in _subclasses(BaseException) if _is_trove(cls)}


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_every_module_is_imported_but_the_listed_ones() -> None:
    walked = {name for package in PACKAGES for name in _walked(package)}
    imported = {module.__name__ for module in trove_modules()}
    assert set(NOT_IMPORTED) <= walked, "an entry of NOT_IMPORTED names no module"
    assert imported == walked - set(NOT_IMPORTED)
    # The walk reaches the leaves, not just the packages.
    assert {"core.errors", "retrieval.index.errors", "trove.bench.errors", "trove.cli"} <= imported


def test_every_trove_exception_derives_from_the_root() -> None:
    exceptions = trove_exceptions()
    assert ConfigError in exceptions and len(exceptions) > 50  # the walk found them
    outside = sorted(
        _qualified(cls)
        for cls in exceptions
        if not issubclass(cls, TroveError) and _qualified(cls) not in OUTSIDE_THE_ROOT
    )
    assert outside == [], f"derive these from core.errors.TroveError: {outside}"


def test_the_allow_list_names_only_classes_outside_the_root() -> None:
    by_name = {_qualified(cls): cls for cls in trove_exceptions()}
    for name in OUTSIDE_THE_ROOT:
        assert name in by_name, f"{name} is no longer defined: remove it from OUTSIDE_THE_ROOT"
        assert not issubclass(by_name[name], TroveError), f"{name} is a TroveError now"


def _trove_classes() -> Iterator[type]:
    for module in trove_modules():
        for value in vars(module).values():
            if inspect.isclass(value) and value.__module__ == module.__name__:
                yield value
    yield from trove_exceptions()


def test_no_class_takes_or_dodges_a_builtin_name() -> None:
    # `IndexError_` dodged `IndexError` with an underscore; `class IndexError` would
    # shadow it in its module and in every module that imports it.
    clashing = sorted(
        _qualified(cls) for cls in _trove_classes() if cls.__name__.strip("_") in BUILTIN_NAMES
    )
    assert clashing == []


def test_one_benchmark_error() -> None:
    from trove.bench import corpus, ingest, opensearch_node, query, resync, serve
    from trove.bench.errors import BenchError

    assert [cls for cls in trove_exceptions() if cls.__name__ == "BenchError"] == [BenchError]
    assert query.BenchError is ingest.BenchError is resync.BenchError is BenchError
    for specific in (serve.ServeBenchError, opensearch_node.NodeError):
        assert issubclass(specific, BenchError)
    assert issubclass(corpus.CorpusUnavailableError, BenchError)


@pytest.mark.parametrize(
    ("qualified", "builtin", "why"),
    [
        ("core.identity.InvalidIdentity", ValueError, "pydantic validators raise it"),
        ("core.errors.ConfigError", ValueError, "pydantic validators raise it"),
        ("retrieval.auth.AuthConfigError", ValueError, "`trove token` catches ValueError"),
        ("trove.bench.errors.BenchError", RuntimeError, "`trove bench` catches RuntimeError"),
        ("retrieval.client.TroveClientError", RuntimeError, "the client's public contract"),
    ],
)
def test_errors_keep_the_builtin_base_callers_catch(
    qualified: str, builtin: type, why: str
) -> None:
    module, name = qualified.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, TroveError)
    assert issubclass(cls, builtin), why
