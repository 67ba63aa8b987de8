"""TroveClient and AsyncTroveClient against a real server on loopback."""

from __future__ import annotations

import anyio
import pytest

from retrieval.api.app import create_app
from retrieval.client import (
    AsyncTroveClient,
    TroveAuthError,
    TroveClient,
    TroveInvalidRequestError,
    TroveNotFoundError,
    TroveRateLimitedError,
)
from tests.retrieval.api.helpers import live_server, make_service, make_settings, token


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client")
    service = make_service(tmp, rate_limit_per_minute=30)
    with live_server(create_app(make_settings(tmp).api, service)) as srv:
        yield srv.url
    service.close()


def test_sync_search_and_document(url):
    with TroveClient(url, token("alice", ("staff",))) as trove:
        answer = trove.search("per diem hotel", top_k=3, filters={"paths": ["handbook/"]})
        assert answer.results[0].doc_id == "hb:travel.md"
        assert answer.results[0].citation.deep_link.startswith("file:///corpus/handbook/travel.md")
        doc = trove.document("hb:leave.md", around="hb:leave.md#0")
        assert [c.chunk_id for c in doc.context] == ["hb:leave.md#0", "hb:leave.md#1"]
        with pytest.raises(TroveNotFoundError):
            trove.document("hr:salary.md")
        with pytest.raises(TroveInvalidRequestError) as invalid:
            trove.search("x", top_k=99)
        assert invalid.value.status == 422


def test_async_search_and_document(url):
    async def go():
        async with AsyncTroveClient(url, token("hanna", ("hr",))) as trove:
            answer = await trove.search("salary bands senior engineer")
            doc = await trove.document("hr:salary.md")
            return answer, doc

    answer, doc = anyio.run(go)
    assert answer.results[0].doc_id == "hr:salary.md"
    assert doc.chunk_count == 1 and doc.path == "hr/salary.md"


def test_client_errors(url):
    with TroveClient(url, "not-a-token") as trove, pytest.raises(TroveAuthError) as bad:
        trove.search("leave")
    assert bad.value.status == 401
    with TroveClient(url, token("rita", ("staff",))) as trove:
        with pytest.raises(TroveRateLimitedError) as limited:
            for _ in range(31):
                trove.search("leave")
        assert limited.value.retry_after_s and limited.value.retry_after_s > 0
    with pytest.raises(ValueError):
        TroveClient(url, "")
