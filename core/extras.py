"""Optional dependencies: say which ``pip install 'trove[EXTRA]'`` a feature needs.

Trove installs as light as its use (docs/dependencies.md): the base is the ground
layer and the HTTP client, and each connector, index backend, the server and
ingestion come with an extra. Code that opens such a feature calls
:func:`require_extra` first, so a missing library is reported as the extra to
install rather than as a bare ``ModuleNotFoundError`` from deep inside an import.
"""

from __future__ import annotations

import importlib.util

from core.errors import TroveError


class MissingExtraError(TroveError, ImportError):
    """A feature's optional dependencies are not installed; the message names the extra."""

    def __init__(self, feature: str, extra: str, missing: list[str]):
        self.feature = feature
        self.extra = extra
        self.missing = missing
        super().__init__(
            f"{feature} needs the '{extra}' extra, which is not installed "
            f"(missing: {', '.join(missing)}): pip install 'trove[{extra}]'"
        )


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        # A parent package that is missing (or a module blocked in sys.modules).
        return False


def require_extra(extra: str, *modules: str, feature: str) -> None:
    """Raise :class:`MissingExtraError` unless every one of ``modules`` is installed.

    :param extra: the extra that installs them, as in ``pip install 'trove[extra]'``.
    :param modules: top-level module names the feature imports.
    :param feature: what the user asked for, for the message ("the S3 connector").
    :raises MissingExtraError: naming the extra and the modules that are missing.
    """
    missing = [module for module in modules if not is_installed(module)]
    if missing:
        raise MissingExtraError(feature, extra, missing)
