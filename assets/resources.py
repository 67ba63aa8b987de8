"""Dagster resources: one `TroveResource` built from trove.yaml gives every asset its parts."""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from pipelines.store import EmbeddingCache, StagingStore
from retrieval.directory import GroupDirectory
from retrieval.embedding.base import Embedder
from retrieval.index.base import IndexBackend
from trove import wiring
from trove.config import Settings, load_settings


class TroveResource(dg.ConfigurableResource):
    """Configuration and shared parts (settings, stores, index, embedder) for the assets.

    The YAML is read once when a run initialises the resource: every step of the
    run sees the rules in force when it started (an ACL rule edited mid-run is
    picked up by the next run), and the parts are built by :mod:`trove.wiring`,
    as the CLI and the API build them.
    """

    config_path: str
    _settings: Settings | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._settings = load_settings(self.config_path)

    def settings(self) -> Settings:
        if self._settings is None:  # outside a run (a sensor tick): read it afresh
            return load_settings(self.config_path)
        return self._settings

    def store(self, source: str) -> StagingStore:
        return wiring.open_staging_store(self.settings(), source)

    def directory(self) -> GroupDirectory:
        return wiring.open_directory(self.settings())

    def embedding_cache(self) -> EmbeddingCache:
        return wiring.open_embedding_cache(self.settings())

    def embedder(self) -> Embedder:
        return wiring.build_embedder(self.settings().embedding)

    def index(self, *, create: bool = False) -> IndexBackend:
        return wiring.open_configured_index(self.settings(), create=create, embedder=self.embedder)
