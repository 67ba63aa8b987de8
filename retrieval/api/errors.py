"""How the HTTP API answers an error: one table from :class:`~core.errors.TroveError`
subclasses to responses, and FastAPI's own validation errors in the same shape.

A :class:`TroveError` a route lets through is answered by the entry of the most
specific class in its MRO that :data:`ERROR_RESPONSES` lists:

=====================  ======  ==============================================
class                  status  body and headers
=====================  ======  ==============================================
AuthenticationError    401     the reason; ``WWW-Authenticate: Bearer ...``
TenantForbiddenError   403     the reason
DocumentNotFoundError  404     the reason (absent and unreadable look alike)
InvalidRequestError    422     FastAPI's validation shape, ``loc`` ``body``
RateLimitedError       429     the reason; ``Retry-After`` in seconds
IndexBackendError      503     "the index is unavailable" (details logged)
AuditError             503     "the audit log is unavailable" (fail closed)
=====================  ======  ==============================================

Bad input is always a 4xx that says why, never a 500. A TroveError the table does
not list (the model failing mid-query, say) is a bug here: Starlette's default 500,
its traceback in the server log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from core.errors import TroveError
from retrieval.audit import AuditError
from retrieval.auth import MissingTokenError
from retrieval.index.errors import IndexBackendError
from retrieval.service import (
    AuthenticationError,
    DocumentNotFoundError,
    InvalidRequestError,
    RateLimitedError,
    TenantForbiddenError,
)

logger = logging.getLogger(__name__)


def error_response(
    status: int, detail: object, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The body every error has (the OpenAPI ``ErrorOut`` schema): ``{"detail": ...}``."""
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def bearer_challenge(exc: BaseException) -> str:
    """RFC 6750 §3.1: ``invalid_token`` for a bad token, no error code for a missing one."""
    if isinstance(exc.__cause__, MissingTokenError) or exc.__cause__ is None:
        return "Bearer"
    return 'Bearer error="invalid_token"'


def _unauthenticated(exc: AuthenticationError) -> JSONResponse:
    return error_response(401, str(exc), {"WWW-Authenticate": bearer_challenge(exc)})


def _forbidden(exc: TenantForbiddenError) -> JSONResponse:
    return error_response(403, str(exc))


def _not_found(exc: DocumentNotFoundError) -> JSONResponse:
    return error_response(404, str(exc))


def _invalid_request(exc: InvalidRequestError) -> JSONResponse:
    # Same shape as FastAPI's own validation errors (the OpenAPI 422 schema).
    return error_response(422, [{"loc": ["body"], "msg": str(exc), "type": "value_error"}])


def _rate_limited(exc: RateLimitedError) -> JSONResponse:
    return error_response(429, str(exc), {"Retry-After": str(max(1, round(exc.retry_after_s)))})


def _index_unavailable(exc: IndexBackendError) -> JSONResponse:
    # The details (paths, hosts, cluster errors) are for the operator, not the caller.
    logger.error("index unavailable: %s", exc)
    return error_response(503, "the index is unavailable")


def _audit_unavailable(exc: AuditError) -> JSONResponse:
    # Fail closed: no answer that cannot be audited.
    logger.error("audit log unavailable: %s", exc)
    return error_response(503, "the audit log is unavailable")


ERROR_RESPONSES: dict[type[TroveError], Callable[[Any], JSONResponse]] = {
    AuthenticationError: _unauthenticated,
    TenantForbiddenError: _forbidden,
    DocumentNotFoundError: _not_found,
    InvalidRequestError: _invalid_request,
    RateLimitedError: _rate_limited,
    IndexBackendError: _index_unavailable,
    AuditError: _audit_unavailable,
}


def response_for(exc: TroveError) -> JSONResponse | None:
    """The response to ``exc`` by :data:`ERROR_RESPONSES`; None when no class of it is listed."""
    for cls in type(exc).__mro__:
        respond = ERROR_RESPONSES.get(cls)
        if respond is not None:
            return respond(exc)
    return None


async def _mapped(_: Request, exc: Exception) -> JSONResponse:
    response = response_for(exc) if isinstance(exc, TroveError) else None
    if response is None:  # registered only for the listed classes, so never
        raise exc
    return response


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid"), "type": e["type"]}
        for e in exc.errors()
    ]
    return error_response(422, errors)


def install_error_handlers(app: FastAPI) -> None:
    """Answer each listed TroveError (and a request FastAPI finds invalid) as the table says."""
    # Starlette picks the handler of the most specific registered class in the MRO,
    # the same class response_for finds.
    for cls in ERROR_RESPONSES:
        app.add_exception_handler(cls, _mapped)
    app.add_exception_handler(RequestValidationError, _validation)
