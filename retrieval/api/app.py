"""``create_app(settings)``: the FastAPI application (OpenAPI at ``/docs``).

The app is a shell: routes call :class:`~retrieval.service.RetrievalService`,
and this module maps the service's errors to HTTP statuses. Bad input is
always a 4xx (422 for invalid values, 413 for an oversized body), never a 500.

Example::

    app = create_app(load_settings("trove.yaml"))
    uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from retrieval.api.metrics import ApiMetrics
from retrieval.api.middleware import (
    AddressBuckets,
    BodySizeLimit,
    RequestMetrics,
    UnauthenticatedLimit,
)
from retrieval.api.routes import documents, health, search
from retrieval.audit import AuditError
from retrieval.auth import MissingTokenError
from retrieval.index.base import IndexError_
from retrieval.service import (
    AuthenticationError,
    DocumentNotFoundError,
    InvalidRequestError,
    RateLimitedError,
    RetrievalService,
    TenantForbiddenError,
)
from trove.config import Settings

logger = logging.getLogger(__name__)

# The routes whose callers must authenticate (the operational ones are open).
PROTECTED_PREFIXES = ("/v1/",)


def bearer_challenge(exc: BaseException) -> str:
    """RFC 6750 §3.1: ``invalid_token`` for a bad token, no error code for a missing one."""
    if isinstance(exc.__cause__, MissingTokenError) or exc.__cause__ is None:
        return "Bearer"
    return 'Bearer error="invalid_token"'


def _error(status: int, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthenticationError)
    async def _unauthenticated(_: Request, exc: AuthenticationError) -> JSONResponse:
        return _error(401, str(exc), {"WWW-Authenticate": bearer_challenge(exc)})

    @app.exception_handler(TenantForbiddenError)
    async def _forbidden(_: Request, exc: TenantForbiddenError) -> JSONResponse:
        return _error(403, str(exc))

    @app.exception_handler(RateLimitedError)
    async def _limited(_: Request, exc: RateLimitedError) -> JSONResponse:
        retry = str(max(1, round(exc.retry_after_s)))
        return _error(429, str(exc), {"Retry-After": retry})

    @app.exception_handler(DocumentNotFoundError)
    async def _not_found(_: Request, exc: DocumentNotFoundError) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(InvalidRequestError)
    async def _invalid(_: Request, exc: InvalidRequestError) -> JSONResponse:
        # Same shape as FastAPI's own validation errors (the OpenAPI 422 schema).
        return _error(422, [{"loc": ["body"], "msg": str(exc), "type": "value_error"}])

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid"), "type": e["type"]}
            for e in exc.errors()
        ]
        return _error(422, errors)

    @app.exception_handler(IndexError_)
    async def _index_unavailable(_: Request, exc: IndexError_) -> JSONResponse:
        # The details (paths, hosts, cluster errors) are for the operator, not the caller.
        logger.error("index unavailable: %s", exc)
        return _error(503, "the index is unavailable")

    @app.exception_handler(AuditError)
    async def _audit_unavailable(_: Request, exc: AuditError) -> JSONResponse:
        # Fail closed: no answer that cannot be audited.
        logger.error("audit log unavailable: %s", exc)
        return _error(503, "the audit log is unavailable")


def create_app(settings: Settings, *, service: RetrievalService | None = None) -> FastAPI:
    """The API app; builds its :class:`RetrievalService` at startup unless one is given.

    A given ``service`` is left open at shutdown (its owner closes it).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = service is None
        app.state.service = service or RetrievalService.from_settings(settings)
        try:
            yield
        finally:
            if owned:
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
    if service is not None:
        app.state.service = service  # usable before startup (e.g. a TestClient without `with`)
    app.state.metrics = ApiMetrics()
    _install_error_handlers(app)
    app.include_router(search.router)
    app.include_router(documents.router)
    app.include_router(health.router)
    # Outermost last: metrics see every response, including 413s from the body limit
    # and 429s from the address limit, which refuses before a body is read.
    app.add_middleware(BodySizeLimit, max_bytes=settings.api.max_body_bytes)
    app.add_middleware(
        UnauthenticatedLimit,
        buckets=AddressBuckets(settings.api.unauthenticated_rate_limit_per_minute),
        prefixes=PROTECTED_PREFIXES,
        on_limited=lambda: record_address_limited(app.state.service),
    )
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    return app


def per_worker_limits(settings: Settings, workers: int) -> Settings:
    """``settings`` with each per-minute limit split over ``workers`` processes (rounded up),
    and, unless configured, the concurrent searches per process (one per core in all).

    Every worker keeps its own counters, so each enforces its share: a caller spread
    over all workers gets at most about the configured limit, one kept on a single
    connection (one worker) gets its share. Never more than configured.
    """
    if workers <= 1:
        return settings
    import os

    slots = settings.api.max_concurrent_searches
    api = settings.api.model_copy(
        update={
            # The cores are shared too: one search per core across all workers.
            "max_concurrent_searches": slots or -(-(os.cpu_count() or 1) // workers),
            "rate_limit_per_minute": -(-settings.api.rate_limit_per_minute // workers),
            "unauthenticated_rate_limit_per_minute": -(
                -settings.api.unauthenticated_rate_limit_per_minute // workers
            ),
        }
    )
    return settings.model_copy(update={"api": api})


WORKERS_ENV_VAR = "TROVE_SERVE_WORKERS"


def create_app_from_environment() -> FastAPI:
    """The app of one ``trove serve --workers N`` process (uvicorn calls this factory).

    The config comes from ``$TROVE_CONFIG`` and the worker count from
    ``$TROVE_SERVE_WORKERS``, both set by ``trove serve``; each worker opens its own
    service over the same memory-mapped index at startup.
    """
    import os

    from trove.config import find_config, load_settings

    workers = int(os.environ.get(WORKERS_ENV_VAR, "1"))
    settings = per_worker_limits(load_settings(find_config(None)), workers)
    return create_app(settings)


def record_address_limited(service: RetrievalService) -> None:
    """The audit line of a request refused for its address (sampled like other refusals)."""
    service.audit.record("rate_limit", principal=None, outcome="limited:address")
