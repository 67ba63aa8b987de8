"""Errors of the OpenSearch backend, all under the index's own ``IndexBackendError``."""

from __future__ import annotations

from dataclasses import dataclass

from retrieval.index.errors import IndexBackendError


class OpenSearchUnavailableError(IndexBackendError):
    """The cluster cannot be reached, rejects our credentials or is unhealthy."""


class OpenSearchVersionError(OpenSearchUnavailableError):
    """The cluster answers but is too old (or not OpenSearch) for what Trove needs."""


class RebuildError(IndexBackendError):
    """A blue/green rebuild stopped before swapping the alias; the old index still serves."""


@dataclass(frozen=True)
class ItemFailure:
    """One bulk item the cluster refused (after retries, for transient errors)."""

    op: str
    id: str
    status: int
    error_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.op} {self.id!r}: {self.status} {self.error_type}: {self.reason}"


class BulkWriteError(IndexBackendError):
    """Some bulk items failed: a bulk response is HTTP 200 even when items fail."""

    def __init__(self, message: str, failures: list[ItemFailure]):
        super().__init__(message)
        self.failures = failures
