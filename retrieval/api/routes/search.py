"""``POST /v1/search``: permission-filtered, reranked, cited passages."""

from __future__ import annotations

from fastapi import APIRouter

from retrieval.api.deps import CurrentPrincipal, MetricsDep, ServiceDep
from retrieval.api.schemas import ErrorOut, SearchRequest, SearchResponse
from retrieval.models import NO_FILTERS

router = APIRouter(prefix="/v1", tags=["search"])

ERRORS = {
    401: {"model": ErrorOut, "description": "Missing, malformed, badly signed or expired token."},
    403: {"model": ErrorOut, "description": "A tenant the token does not carry."},
    413: {"model": ErrorOut, "description": "Request body too large."},
    429: {"model": ErrorOut, "description": "Rate limit exceeded (see Retry-After)."},
}


@router.post("/search", response_model=SearchResponse, responses=ERRORS)
def search(
    body: SearchRequest,
    principal: CurrentPrincipal,
    service: ServiceDep,
    metrics: MetricsDep,
) -> SearchResponse:
    """Passages the caller may read that best answer ``query``, each with a citation."""
    service.check_tenant(principal, body.tenant)
    outcome = service.search(
        principal,
        body.query,
        top_k=body.top_k,
        filters=body.filters.to_filters() if body.filters else NO_FILTERS,
        rerank=body.rerank,
    )
    metrics.observe_search(len(outcome.results), outcome.filtered_out, outcome.low_confidence)
    return SearchResponse.from_outcome(outcome)
