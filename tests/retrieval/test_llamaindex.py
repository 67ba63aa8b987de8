"""The LlamaIndex adapter inside a LlamaIndex query pipeline, against a real server."""

from __future__ import annotations

import anyio
import pytest
from llama_index.core import get_response_synthesizer
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine

from retrieval.api.app import create_app
from retrieval.client import AsyncTroveClient, TroveClient
from retrieval.llamaindex import TroveRetriever
from tests.retrieval.api.helpers import live_server, make_service, make_settings, token


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("llamaindex")
    service = make_service(tmp)
    with live_server(create_app(make_settings(tmp).api, service)) as srv:
        yield srv.url
    service.close()


def test_query_engine_uses_trove_as_its_retriever(url):
    with TroveClient(url, token("alice", ("staff",))) as client:
        retriever = TroveRetriever(client, top_k=4)
        llm = MockLLM(max_tokens=8)
        engine = RetrieverQueryEngine.from_args(
            retriever, llm=llm, response_synthesizer=get_response_synthesizer(llm=llm)
        )
        response = engine.query("How many days of paid leave do employees get?")
    sources = response.source_nodes
    assert sources, "the query engine got no nodes from Trove"
    top = sources[0]
    assert top.node.metadata["doc_id"] == "hb:leave.md"
    assert "27 days" in top.node.get_content()
    assert top.node.metadata["deep_link"].startswith("file:///corpus/handbook/leave.md#")
    assert {s.node.metadata["doc_id"] for s in sources} <= {"hb:leave.md", "hb:travel.md"}
    # Citations stay out of what the LLM reads, but the title is kept for grounding.
    llm_view = top.node.get_content(metadata_mode="llm")
    assert "Title of handbook/leave.md" in llm_view and "chunk_ids" not in llm_view
    assert retriever.last_response is not None
    assert isinstance(retriever.last_response.low_confidence, bool)


def test_async_retrieval_respects_the_users_permissions(url):
    async def go(user, groups):
        async with AsyncTroveClient(url, token(user, groups)) as aclient:
            with TroveClient(url, token(user, groups)) as client:
                retriever = TroveRetriever(client, async_client=aclient, top_k=10)
                return await retriever.aretrieve("salary bands senior engineer Rotterdam")

    alice = anyio.run(go, "alice", ("staff",))
    hanna = anyio.run(go, "hanna", ("hr",))
    assert "hr:salary.md" not in {n.node.metadata["doc_id"] for n in alice}
    assert hanna[0].node.metadata["doc_id"] == "hr:salary.md"
    assert hanna[0].node.node_id == "hr:salary.md#0"
