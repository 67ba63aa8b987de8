"""Open the index backend named in the configuration."""

from __future__ import annotations

from core.extras import require_extra
from retrieval.index.base import IndexBackend
from retrieval.index.config import IndexConfig


def open_index(
    config: IndexConfig, *, create: bool = False, dimensions: int | None = None
) -> IndexBackend:
    """The configured backend; ``create`` makes an empty index when none exists yet."""
    if config.backend == "embedded":
        # lazy: a backend's libraries (opensearch-py, torch's kernel) load only when it is chosen
        from retrieval.index.embedded import EmbeddedIndex

        return EmbeddedIndex.open(
            config.path, create=create, dimensions=dimensions, dense_kernel=config.dense_kernel
        )
    if config.backend == "opensearch":
        require_extra("opensearch", "opensearchpy", feature="the OpenSearch index backend")
        # lazy: a backend's libraries (opensearch-py, torch's kernel) load only when it is chosen
        from retrieval.index.opensearch.index import OpenSearchIndex

        return OpenSearchIndex.open(config, create=create, dimensions=dimensions)
    raise ValueError(f"unknown index backend {config.backend!r} (valid: embedded, opensearch)")
