"""The root of every error Trove raises on purpose.

Each package derives its errors from :class:`TroveError`, through a base of its own
where it has several (``connectors.errors.ConnectorError``,
``pipelines.errors.PipelineError``, ``retrieval.index.errors.IndexBackendError``,
``retrieval.service.ServiceError``, ``retrieval.auth.AuthError``,
``trove.bench.errors.BenchError``). An error that callers catch by a builtin
(``ValueError``, ``RuntimeError``) keeps that builtin as a second base.

The edges map the subclasses once each: the CLI to an exit status
(``trove.cli.EXIT_STATUS``), the HTTP API to a status and body
(``retrieval.api.errors.ERROR_RESPONSES``). Any other exception is a bug.
``tests/core/test_errors.py`` checks that every exception class Trove defines
derives from :class:`TroveError`.
"""

from __future__ import annotations


class TroveError(Exception):
    """Something Trove detected and can explain: the message says what and why."""


class ConfigError(TroveError, ValueError):
    """The configuration file is missing or invalid; the message says why."""
