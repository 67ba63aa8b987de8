"""``POST /v1/search``: permission-filtered, reranked, cited passages."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from retrieval.api.deps import CurrentPrincipal, MetricsDep, ServiceDep, requested_tenant
from retrieval.api.schemas import ErrorOut, SearchRequest, SearchResponse
from retrieval.models import NO_FILTERS

router = APIRouter(prefix="/v1", tags=["search"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, malformed, badly signed or expired token."},
    403: {"model": ErrorOut, "description": "A tenant the token does not carry."},
    413: {"model": ErrorOut, "description": "Request body too large."},
    429: {"model": ErrorOut, "description": "Rate limit exceeded (see Retry-After)."},
}


@router.post("/search", response_model=SearchResponse, responses=ERRORS)
async def search(
    body: SearchRequest,
    principal: CurrentPrincipal,
    service: ServiceDep,
    metrics: MetricsDep,
) -> Response:
    """Passages the caller may read that best answer ``query``, each with a citation."""
    service.check_tenant(principal, requested_tenant(body.tenant))

    def answer() -> bytes:
        outcome = service.search(
            principal,
            body.query,
            top_k=body.top_k,
            filters=body.filters.to_filters() if body.filters else NO_FILTERS,
            rerank=body.rerank,
        )
        started = time.perf_counter()
        # Serialized here, once, by the model itself: FastAPI would validate the returned
        # model again and encode it through jsonable_encoder (the schema stays documented
        # by response_model).
        content = SearchResponse.from_outcome(outcome).model_dump_json().encode()
        metrics.observe_stages(
            {**outcome.stage_seconds, "serialize": time.perf_counter() - started}
        )
        metrics.observe_search(len(outcome.results), outcome.filtered_out, outcome.low_confidence)
        return content

    # One search at a time per process (a worker per core): answer on the event loop,
    # with no hand-off to a thread and back. Otherwise the searches share the cores in
    # the thread pool, one hand-off per request.
    if service.max_concurrent_searches == 1:
        content = answer()
    else:
        content = await run_in_threadpool(answer)
    return Response(content, media_type="application/json")
