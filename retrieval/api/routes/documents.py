"""``GET /v1/documents/{doc_id}``: metadata and neighbouring chunks, permission-checked."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from retrieval.api.deps import CurrentPrincipal, ServiceDep
from retrieval.api.schemas import DocumentOut, ErrorOut
from retrieval.service import MAX_DOC_ID_CHARS

router = APIRouter(prefix="/v1", tags=["documents"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, malformed, badly signed or expired token."},
    403: {"model": ErrorOut, "description": "A tenant the token does not carry."},
    404: {"model": ErrorOut, "description": "Absent, or not readable by the caller."},
    429: {"model": ErrorOut, "description": "Rate limit exceeded (see Retry-After)."},
}


@router.get("/documents/{doc_id:path}", response_model=DocumentOut, responses=ERRORS)
def get_document(
    doc_id: str,
    principal: CurrentPrincipal,
    service: ServiceDep,
    around: Annotated[
        str | None,
        Query(
            max_length=MAX_DOC_ID_CHARS + 16,
            description="A chunk id of this document: return it with its neighbours.",
        ),
    ] = None,
    window: Annotated[int, Query(ge=0, le=5, description="Neighbours on each side.")] = 1,
) -> DocumentOut:
    """A document the caller may read; 404 alike for absent and forbidden documents."""
    view = service.document(principal, doc_id, around=around, window=window)
    return DocumentOut.from_view(view)
