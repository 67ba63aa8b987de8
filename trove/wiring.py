"""Wiring: the one place that turns :class:`~trove.config.Settings` into working parts.

The CLI, the HTTP API and MCP server, the Dagster resource and the benchmarks
all open the index, the embedder, the group directory, the searcher and the
retrieval service through these functions, so they cannot drift apart (the same
index options, the same model backend, the same directory file). Nothing below
this layer sees ``Settings``: each part gets its own configuration block.

Heavy libraries (the model, FastAPI) are imported by the modules that need them,
when a function here first calls into them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipelines.store import EmbeddingCache, StagingStore
from retrieval.audit import AuditLog
from retrieval.auth import TokenVerifier
from retrieval.directory import GroupDirectory
from retrieval.embedding.base import Embedder
from retrieval.embedding.config import EmbeddingConfig
from retrieval.embedding.factory import get_embedder
from retrieval.index.base import IndexBackend, IndexNotFoundError
from retrieval.index.factory import open_index
from retrieval.rerank import build_reranker
from retrieval.search import Searcher
from retrieval.service import RetrievalService
from trove.config import Settings, find_config, load_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

# `trove serve --workers N` tells each uvicorn worker process how many there are.
WORKERS_ENV_VAR = "TROVE_SERVE_WORKERS"


def build_embedder(config: EmbeddingConfig) -> Embedder:
    """The configured embedding model on its backend (loaded lazily by the backend)."""
    return get_embedder(
        config.model, device=config.device, batch_size=config.batch_size, backend=config.backend
    )


def open_directory(settings: Settings) -> GroupDirectory:
    """The group directory in the state folder (created empty when missing)."""
    return GroupDirectory.in_state_dir(settings.state.path)


def open_staging_store(settings: Settings, source: str) -> StagingStore:
    """A source's staging store; an unknown source name is a :class:`ConfigError`."""
    settings.source(source)
    return StagingStore.for_source(settings.state.path, source)


def open_embedding_cache(settings: Settings) -> EmbeddingCache:
    return EmbeddingCache.in_state_dir(settings.state.path)


def open_configured_index(
    settings: Settings,
    *,
    create: bool = False,
    embedder: Callable[[], Embedder] | None = None,
) -> IndexBackend:
    """The configured index; with ``create``, a missing one is created.

    Only a brand-new index needs the model's dimensions, so ``embedder`` (a factory)
    is called only then: an unchanged re-sync never loads the model.
    """
    try:
        return open_index(settings.index)
    except IndexNotFoundError:
        if not create:
            raise
    model = (embedder or (lambda: build_embedder(settings.embedding)))()
    return open_index(settings.index, create=True, dimensions=model.dimensions)


def open_searcher(
    settings: Settings,
    *,
    index: IndexBackend | None = None,
    embedder: Embedder | None = None,
) -> Searcher:
    """A first-stage searcher over the configured index (opened unless given)."""
    return Searcher.from_config(
        index if index is not None else open_index(settings.index),
        embedder if embedder is not None else build_embedder(settings.embedding),
        settings.retrieval,
        identity=open_directory(settings),
    )


def build_retrieval_service(settings: Settings, *, warm_up: bool = True) -> RetrievalService:
    """The service behind the API and MCP: index, query model, reranker, verifier, audit log.

    ``warm_up`` readies the query model, the index's first dense search and the
    reranker before the first request, so no caller pays for them.
    """
    verifier = TokenVerifier.from_config(settings.api)
    index = open_index(settings.index)
    embedder = build_embedder(settings.embedding)
    searcher = open_searcher(settings, index=index, embedder=embedder)
    reranker = build_reranker(settings.retrieval.reranker)
    if warm_up:
        embedder.warm_up_queries()
        for part in (index, reranker):
            warm = getattr(part, "warm_up", None)
            if warm is not None:
                warm()
    audit = AuditLog(settings.api.audit_log, include_queries=settings.api.audit_log_queries)
    return RetrievalService(
        index,
        searcher,
        retrieval=settings.retrieval,
        api=settings.api,
        verifier=verifier,
        reranker=reranker,
        audit=audit,
        is_model_ready=lambda: embedder.query_ready,
        max_concurrent_searches=settings.api.max_concurrent_searches,
    )


def create_api_app(settings: Settings, *, service: RetrievalService | None = None) -> FastAPI:
    """The HTTP API over ``service``, or over one built from ``settings`` at startup.

    A given ``service`` is left open at shutdown (its owner closes it).
    """
    # lazy: FastAPI and the web stack load only when an API app is built
    from retrieval.api.app import create_app

    return create_app(
        settings.api,
        service if service is not None else (lambda: build_retrieval_service(settings)),
    )


def create_app_from_environment() -> FastAPI:
    """The app of one ``trove serve --workers N`` process (uvicorn calls this factory).

    The config comes from ``$TROVE_CONFIG`` and the worker count from
    ``$TROVE_SERVE_WORKERS``, both set by ``trove serve``; each worker opens its own
    service over the same memory-mapped index at startup.
    """
    # lazy: FastAPI and the web stack load only when an API app is built
    from retrieval.api.app import per_worker_limits

    settings = load_settings(find_config(None))
    workers = int(os.environ.get(WORKERS_ENV_VAR, "1"))
    settings = settings.model_copy(update={"api": per_worker_limits(settings.api, workers)})
    return create_api_app(settings)
