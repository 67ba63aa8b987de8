"""The OpenSearch backend: the scale-out engine with the embedded index's semantics.

Modules, one job each: ``client`` (connection, readiness, version), ``queries``
(pure request bodies), ``documents`` (chunk <-> ``_source``), ``bulk`` (robust
bulk writes), ``lifecycle`` (versioned indexes behind an alias, blue/green
rebuild) and ``index`` (:class:`OpenSearchIndex`, the ``IndexBackend``).
``opensearch-py`` is imported only by ``client``, ``bulk``, ``index`` and ``lifecycle``.
"""

from retrieval.index.opensearch.errors import (
    BulkWriteError,
    OpenSearchUnavailableError,
    OpenSearchVersionError,
    RebuildError,
)

__all__ = [
    "BulkWriteError",
    "OpenSearchUnavailableError",
    "OpenSearchVersionError",
    "RebuildError",
]
