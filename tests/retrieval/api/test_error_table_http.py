"""The API answers a TroveError by one table (retrieval/api/errors.py), wherever it is
raised: the nearest listed class decides the status; bad input is a 4xx that says why,
an unavailable index a 503 that names nothing of the operator's; an unlisted one a 500."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.errors import TroveError
from retrieval.api.app import create_app
from retrieval.api.errors import ERROR_RESPONSES, response_for
from retrieval.audit import AuditError
from retrieval.embedding.base import EmbeddingError
from retrieval.index.errors import IndexBackendError, IndexCorruptError
from retrieval.index.opensearch.errors import OpenSearchUnavailableError
from retrieval.service import (
    AuthenticationError,
    DocumentNotFoundError,
    InvalidRequestError,
    RateLimitedError,
    TenantForbiddenError,
)
from tests.retrieval.api.helpers import auth, make_service, make_settings, token

STATUS = {
    AuthenticationError: 401,
    TenantForbiddenError: 403,
    DocumentNotFoundError: 404,
    InvalidRequestError: 422,
    RateLimitedError: 429,
    IndexBackendError: 503,
    AuditError: 503,
}


def _raise(error: TroveError) -> Callable[..., None]:
    def fails(*args: object, **kwargs: object) -> None:
        raise error

    return fails


def test_the_table_lists_each_status_once_per_class() -> None:
    assert set(ERROR_RESPONSES) == set(STATUS)
    for cls, status in STATUS.items():
        error = RateLimitedError("slow down", 2.4) if cls is RateLimitedError else cls("why")
        response = response_for(error)
        assert response is not None and response.status_code == status, cls
    assert response_for(EmbeddingError("no model")) is None


class _Gone(DocumentNotFoundError):
    """Listed by its parent only."""


@pytest.mark.parametrize(
    ("error", "status", "detail"),
    [
        (IndexCorruptError("segment 7 of /srv/idx is truncated"), 503, "the index is unavailable"),
        (OpenSearchUnavailableError("es-1:9200 refused"), 503, "the index is unavailable"),
        (
            InvalidRequestError("top_k must be at most 50"),
            422,
            [{"loc": ["body"], "msg": "top_k must be at most 50", "type": "value_error"}],
        ),
        (_Gone("no such document"), 404, "no such document"),
        (TenantForbiddenError("tenant 'globex' is not the token's"), 403, None),
    ],
)
def test_an_error_raised_inside_the_index_gets_its_status(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: TroveError,
    status: int,
    detail: object,
) -> None:
    service = make_service(tmp_path)
    for method in ("search_lexical", "search_dense"):
        monkeypatch.setattr(service.index, method, _raise(error))
    client = TestClient(create_app(make_settings(tmp_path).api, service))
    response = client.post(
        "/v1/search", json={"query": "leave"}, headers=auth(token("a", ("staff",)))
    )
    assert response.status_code == status
    assert response.json() == {"detail": str(error) if detail is None else detail}
    assert "/srv/idx" not in response.text and "es-1" not in response.text
    service.close()


def test_a_trove_error_the_table_does_not_list_is_a_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = make_service(tmp_path)
    monkeypatch.setattr(service.searcher.embedder, "encode_query", _raise(EmbeddingError("oom")))
    client = TestClient(create_app(make_settings(tmp_path).api, service))
    with pytest.raises(EmbeddingError):  # a bug: the server logs its traceback
        client.post("/v1/search", json={"query": "leave"}, headers=auth(token("a", ("staff",))))
    quiet = TestClient(client.app, raise_server_exceptions=False)
    response = quiet.post(
        "/v1/search", json={"query": "leave"}, headers=auth(token("a", ("staff",)))
    )
    assert response.status_code == 500 and "oom" not in response.text
    service.close()
