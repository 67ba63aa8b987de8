"""Errors of the index contract (:mod:`retrieval.index.base`), shared by every backend.

A backend's own errors derive from :class:`IndexBackendError` (the OpenSearch ones
live in :mod:`retrieval.index.opensearch.errors`), so a caller that only needs to
know "the index cannot answer" catches one class.
"""

from __future__ import annotations

from core.errors import TroveError


class IndexBackendError(TroveError):
    """Base class of index errors: the index cannot be opened, read or written."""


class IndexNotFoundError(IndexBackendError):
    """No index exists at the configured location yet (run `trove ingest`)."""


class IndexCorruptError(IndexBackendError):
    """The index files are unreadable or inconsistent."""


class InvalidBatchError(IndexBackendError, ValueError):
    """A write batch is malformed; nothing was written."""
