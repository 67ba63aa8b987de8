"""``create_app(api, service)``: the FastAPI application (OpenAPI at ``/docs``).

The app is a shell: routes call :class:`~retrieval.service.RetrievalService`,
and :mod:`retrieval.api.errors` maps the errors they let through to HTTP statuses,
in one table. Bad input is always a 4xx (422 for invalid values, 413 for an
oversized body), never a 500.

Example::

    app = create_app(settings.api, service)  # trove.wiring.create_api_app builds both
    uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from retrieval.api.errors import install_error_handlers
from retrieval.api.metrics import ApiMetrics
from retrieval.api.middleware import (
    AddressBuckets,
    BodySizeLimit,
    RequestMetrics,
    UnauthenticatedLimit,
)
from retrieval.api.routes import documents, health, search
from retrieval.config import ApiConfig
from retrieval.service import RetrievalService

# The routes whose callers must authenticate (the operational ones are open).
PROTECTED_PREFIXES = ("/v1/",)


def create_app(
    api: ApiConfig, service: RetrievalService | Callable[[], RetrievalService]
) -> FastAPI:
    """The API app over ``service``, or over the one ``service()`` builds at startup.

    A given service is left open at shutdown (its owner closes it); a built one is
    closed with the app.
    """
    given = service if isinstance(service, RetrievalService) else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if given is None:
            assert callable(service)
            app.state.service = service()
        try:
            yield
        finally:
            if given is None:
                app.state.service.close()

    app = FastAPI(
        title="Trove retrieval API",
        version="1",
        description=(
            "Permission-filtered, cited passages for AI agents. Every request runs as the "
            "user named by its bearer token; nothing in a request can change that."
        ),
        lifespan=lifespan,
    )
    if given is not None:
        app.state.service = given  # usable before startup (e.g. a TestClient without `with`)
    app.state.metrics = ApiMetrics()
    install_error_handlers(app)
    app.include_router(search.router)
    app.include_router(documents.router)
    app.include_router(health.router)
    # Outermost last: metrics see every response, including 413s from the body limit
    # and 429s from the address limit, which refuses before a body is read.
    app.add_middleware(BodySizeLimit, max_bytes=api.max_body_bytes)
    app.add_middleware(
        UnauthenticatedLimit,
        buckets=AddressBuckets(api.unauthenticated_rate_limit_per_minute),
        prefixes=PROTECTED_PREFIXES,
        on_limited=lambda: record_address_limited(app.state.service),
    )
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    return app


def per_worker_limits(api: ApiConfig, workers: int) -> ApiConfig:
    """``api`` with each per-minute limit split over ``workers`` processes (rounded up),
    and, unless configured, the concurrent searches per process (one per core in all).

    Every worker keeps its own counters, so each enforces its share: a caller spread
    over all workers gets at most about the configured limit, one kept on a single
    connection (one worker) gets its share. Never more than configured.
    """
    if workers <= 1:
        return api
    slots = api.max_concurrent_searches
    return api.model_copy(
        update={
            # The cores are shared too: one search per core across all workers.
            "max_concurrent_searches": slots or -(-(os.cpu_count() or 1) // workers),
            "rate_limit_per_minute": -(-api.rate_limit_per_minute // workers),
            "unauthenticated_rate_limit_per_minute": -(
                -api.unauthenticated_rate_limit_per_minute // workers
            ),
        }
    )


def record_address_limited(service: RetrievalService) -> None:
    """The audit line of a request refused for its address (sampled like other refusals)."""
    service.audit.record("rate_limit", principal=None, outcome="limited:address")
