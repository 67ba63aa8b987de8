"""``/healthz`` (the process answers), ``/readyz`` (index and model), ``/metrics``."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from retrieval.api.deps import MetricsDep, ServiceDep
from retrieval.api.metrics import CONTENT_TYPE
from retrieval.api.schemas import HealthOut, ReadyOut

router = APIRouter(tags=["operations"])
logger = logging.getLogger(__name__)


@router.get("/healthz", response_model=HealthOut)
def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
def readyz(service: ServiceDep) -> JSONResponse:
    checks = service.readiness()
    ready = all(checks.values())
    body = ReadyOut(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
def metrics(service: ServiceDep, api_metrics: MetricsDep) -> Response:
    """Prometheus text format."""
    try:
        stats = service.index_stats()
    except Exception as exc:  # metrics must answer even when the index does not
        logger.warning("metrics: index stats unavailable: %s", exc)
        stats = None
    return Response(api_metrics.render(stats), media_type=CONTENT_TYPE)
