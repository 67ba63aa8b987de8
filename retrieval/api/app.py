"""``create_app(settings)``: the FastAPI application (OpenAPI at ``/docs``).

The app is a shell: routes call :class:`~retrieval.service.RetrievalService`,
and this module maps the service's errors to HTTP statuses. Bad input is
always a 4xx (422 for invalid values, 413 for an oversized body), never a 500.

Example::

    app = create_app(load_settings("trove.yaml"))
    uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from retrieval.api.metrics import ApiMetrics
from retrieval.api.middleware import BodySizeLimit, RequestMetrics
from retrieval.api.routes import documents, health, search
from retrieval.audit import AuditError
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


def _error(status: int, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthenticationError)
    async def _unauthenticated(_: Request, exc: AuthenticationError) -> JSONResponse:
        return _error(401, str(exc), {"WWW-Authenticate": "Bearer"})

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
        return _error(503, f"the index is unavailable: {exc}")

    @app.exception_handler(AuditError)
    async def _audit_unavailable(_: Request, exc: AuditError) -> JSONResponse:
        # Fail closed: no answer that cannot be audited.
        return _error(503, str(exc))


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
    # Outermost last: metrics see every response, including 413s from the body limit.
    app.add_middleware(BodySizeLimit, max_bytes=settings.api.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    return app
