"""The root of every error Trove raises on purpose.

The CLI and the HTTP API map :class:`TroveError`'s subclasses to an exit status
or an HTTP status in one place each; anything else is a bug.
"""

from __future__ import annotations


class TroveError(Exception):
    """Something Trove detected and can explain: the message says what and why."""


class ConfigError(TroveError, ValueError):
    """The configuration file is missing or invalid; the message says why."""
