"""Python clients of the Trove retrieval API: :class:`TroveClient` and :class:`AsyncTroveClient`.

Both send the caller's bearer token and return the API's own pydantic models
(:class:`~retrieval.api.schemas.SearchResponse`, :class:`~retrieval.api.schemas.DocumentOut`).
HTTP errors become :class:`TroveClientError` subclasses carrying the status and
the server's message.

Example::

    with TroveClient("http://127.0.0.1:8080", token=os.environ["TROVE_TOKEN"]) as trove:
        answer = trove.search("How many days of leave?", top_k=5)
        for r in answer.results:
            print(r.citation.title, r.citation.deep_link)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from core.errors import TroveError
from retrieval.api.schemas import DocumentOut, FiltersIn, SearchResponse

DEFAULT_TIMEOUT_S = 30.0


class TroveClientError(TroveError, RuntimeError):
    """The API answered with an error; ``status`` and ``detail`` say which."""

    def __init__(self, status: int, detail: Any):
        self.status = status
        self.detail = detail
        super().__init__(f"HTTP {status}: {detail}")


class TroveAuthError(TroveClientError):
    """401 (bad or missing token) or 403 (a tenant the token does not carry)."""


class TroveNotFoundError(TroveClientError):
    """404: the document is absent or not readable by this caller."""


class TroveRateLimitedError(TroveClientError):
    """429: slow down; ``retry_after_s`` from the server."""

    def __init__(self, status: int, detail: Any, retry_after_s: float | None):
        super().__init__(status, detail)
        self.retry_after_s = retry_after_s


class TroveInvalidRequestError(TroveClientError):
    """422 or 413: the request was refused as invalid."""


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    status = response.status_code
    if status in (401, 403):
        raise TroveAuthError(status, detail)
    if status == 404:
        raise TroveNotFoundError(status, detail)
    if status == 429:
        retry = response.headers.get("retry-after")
        raise TroveRateLimitedError(status, detail, float(retry) if retry else None)
    if status in (413, 422):
        raise TroveInvalidRequestError(status, detail)
    raise TroveClientError(status, detail)


def _search_body(
    query: str,
    top_k: int,
    filters: FiltersIn | Mapping[str, Any] | None,
    rerank: bool | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query, "top_k": top_k}
    if filters is not None:
        model = filters if isinstance(filters, FiltersIn) else FiltersIn.model_validate(filters)
        body["filters"] = model.model_dump(mode="json", exclude_none=True)
    if rerank is not None:
        body["rerank"] = rerank
    return body


def _document_params(around: str | None, window: int) -> dict[str, Any]:
    params: dict[str, Any] = {"window": window}
    if around is not None:
        params["around"] = around
    return params


def _document_path(doc_id: str) -> str:
    # Document ids hold ":" and "/" (source:path); anything else is escaped.
    return "/v1/documents/" + quote(doc_id, safe="/:@")


def _headers(token: str) -> dict[str, str]:
    if not token:
        raise ValueError("a Trove client needs the caller's bearer token")
    return {"Authorization": f"Bearer {token}"}


class TroveClient:
    """Synchronous client; use as a context manager or call :meth:`close`.

    :param base_url: e.g. ``http://127.0.0.1:8080``.
    :param token: the JWT of the user the agent acts for.
    :param transport: an ``httpx`` transport (tests pass an ASGI or mock transport).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ):
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(token), timeout=timeout, transport=transport
        )

    def search(
        self,
        query: str,
        *,
        top_k: int = 8,
        filters: FiltersIn | Mapping[str, Any] | None = None,
        rerank: bool | None = None,
    ) -> SearchResponse:
        response = self._http.post("/v1/search", json=_search_body(query, top_k, filters, rerank))
        _raise_for(response)
        return SearchResponse.model_validate(response.json())

    def document(self, doc_id: str, *, around: str | None = None, window: int = 1) -> DocumentOut:
        response = self._http.get(_document_path(doc_id), params=_document_params(around, window))
        _raise_for(response)
        return DocumentOut.model_validate(response.json())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TroveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTroveClient:
    """Asynchronous twin of :class:`TroveClient`."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(token), timeout=timeout, transport=transport
        )

    async def search(
        self,
        query: str,
        *,
        top_k: int = 8,
        filters: FiltersIn | Mapping[str, Any] | None = None,
        rerank: bool | None = None,
    ) -> SearchResponse:
        response = await self._http.post(
            "/v1/search", json=_search_body(query, top_k, filters, rerank)
        )
        _raise_for(response)
        return SearchResponse.model_validate(response.json())

    async def document(
        self, doc_id: str, *, around: str | None = None, window: int = 1
    ) -> DocumentOut:
        response = await self._http.get(
            _document_path(doc_id), params=_document_params(around, window)
        )
        _raise_for(response)
        return DocumentOut.model_validate(response.json())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncTroveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
