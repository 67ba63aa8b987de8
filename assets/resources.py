"""Dagster resources: one `TroveResource` built from trove.yaml gives every asset its parts."""

from __future__ import annotations

import dagster as dg

from pipelines.store import EmbeddingCache, StagingStore
from retrieval.directory import GroupDirectory
from retrieval.embedding.embedder import AnyEmbedder, get_embedder
from retrieval.index.base import IndexBackend, IndexNotFoundError
from retrieval.index.factory import open_index
from trove.config import Settings, load_settings


class TroveResource(dg.ConfigurableResource):
    """Configuration and shared parts (settings, stores, index, embedder) for the assets."""

    config_path: str

    def settings(self) -> Settings:
        # Read afresh for every step: a run must see the rules in force now (an
        # edited ACL rule is a change to apply), and parsing YAML is cheap.
        return load_settings(self.config_path)

    def store(self, source: str) -> StagingStore:
        settings = self.settings()
        settings.source(source)  # fails clearly on an unknown partition
        return StagingStore.for_source(settings.state.path, source)

    def directory(self) -> GroupDirectory:
        return GroupDirectory.in_state_dir(self.settings().state.path)

    def embedding_cache(self) -> EmbeddingCache:
        return EmbeddingCache.in_state_dir(self.settings().state.path)

    def embedder(self) -> AnyEmbedder:
        cfg = self.settings().embedding
        return get_embedder(
            cfg.model, device=cfg.device, batch_size=cfg.batch_size, backend=cfg.backend
        )

    def index(self, *, create: bool = False) -> IndexBackend:
        config = self.settings().index
        try:
            return open_index(config)
        except IndexNotFoundError:
            if not create:
                raise
        # Only a brand-new index needs the model's dimensions (loading the model);
        # an unchanged re-sync never does.
        return open_index(config, create=True, dimensions=self.embedder().dimensions)
