"""Request dependencies behind ``Annotated`` aliases: a route's signature shows who calls.

* :data:`ServiceDep` — the app's :class:`~retrieval.service.RetrievalService`.
* :data:`CurrentPrincipal` — the caller, from the verified bearer token only; an
  ``X-Trove-Tenant`` header asking for another tenant is refused (403); one
  request is counted against the caller's rate limit.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.acl import Principal
from core.identity import InvalidIdentity, canonical_tenant
from retrieval.api.metrics import ApiMetrics
from retrieval.service import RetrievalService

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description="A JWT with `sub`, `groups`, optional `tenant` and `exp` (`trove token`).",
)


# Async (they only read app state): FastAPI runs a sync dependency in the thread pool,
# one hand-off to a worker thread and back per dependency and request.
async def get_service(request: Request) -> RetrievalService:
    return request.app.state.service


async def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


ServiceDep = Annotated[RetrievalService, Depends(get_service)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]


def requested_tenant(value: str | None) -> str | None:
    """A tenant a request asks for, spelled as the token's is (canonical form).

    One with no canonical form is passed on as sent: it matches no token's tenant (403).
    """
    if value is None:
        return None
    try:
        return canonical_tenant(value)
    except InvalidIdentity:
        return value


async def get_principal(
    service: ServiceDep,
    metrics: MetricsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    x_trove_tenant: Annotated[
        str | None,
        Header(max_length=256, description="Optional; must equal the token's tenant."),
    ] = None,
) -> Principal:
    started = time.perf_counter()
    token = credentials.credentials if credentials is not None else None
    principal = service.authenticate(token, requested_tenant=requested_tenant(x_trove_tenant))
    service.check_rate(principal)
    metrics.observe_stages({"auth": time.perf_counter() - started})
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
