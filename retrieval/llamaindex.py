"""A LlamaIndex retriever over the Trove API, so a LlamaIndex agent can use Trove.

Each passage becomes a ``TextNode`` (id = the passage's first chunk id) whose
metadata carries the citation, so LlamaIndex's response synthesis and
``source_nodes`` keep what the agent needs to cite. Permissions are the token's:
the retriever only sees what the API returns for that user.

Example::

    from llama_index.core.query_engine import RetrieverQueryEngine

    retriever = TroveRetriever(TroveClient(url, token), top_k=5)
    engine = RetrieverQueryEngine.from_args(retriever, llm=my_llm)
    response = engine.query("How many days of leave do I get?")
    print(response.source_nodes[0].metadata["deep_link"])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_index.core.callbacks import CallbackManager
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from retrieval.api.schemas import ResultOut, SearchResponse
from retrieval.client import AsyncTroveClient, TroveClient

# Citation fields kept out of the text the LLM embeds or reads as "metadata".
_HIDDEN_FROM_LLM = ["chunk_ids", "char_start", "char_end", "doc_version", "uri", "risk"]


def node_of(result: ResultOut) -> NodeWithScore:
    """A LlamaIndex node for one passage, with its citation as metadata."""
    c = result.citation
    metadata: dict[str, Any] = {
        "doc_id": result.doc_id,
        "source": result.source,
        "title": c.title,
        "path": c.path,
        "section": " › ".join(c.section),
        "pages": list(c.pages),
        "uri": c.uri,
        "deep_link": c.deep_link,
        "char_start": c.char_start,
        "char_end": c.char_end,
        "doc_version": c.doc_version,
        "chunk_ids": list(result.chunk_ids),
        "risk": [r.model_dump() for r in result.risk],
    }
    node = TextNode(
        id_=result.chunk_id,
        text=result.text,
        metadata=metadata,
        excluded_llm_metadata_keys=_HIDDEN_FROM_LLM,
        excluded_embed_metadata_keys=list(metadata),
    )
    return NodeWithScore(node=node, score=result.score)


class TroveRetriever(BaseRetriever):
    """``BaseRetriever`` backed by :class:`TroveClient` (and optionally the async client).

    :param client: a :class:`TroveClient` carrying the user's token.
    :param async_client: used by ``aretrieve``; without one, ``aretrieve`` calls ``client``.
    :param top_k: passages per query (1–50).
    :param filters: optional narrowing (``sources``, ``paths``, ``doc_types``, dates).
    """

    def __init__(
        self,
        client: TroveClient,
        *,
        async_client: AsyncTroveClient | None = None,
        top_k: int = 8,
        filters: Mapping[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
    ):
        if not 1 <= top_k <= 50:
            raise ValueError(f"top_k must be within [1, 50], got {top_k}")
        self.client = client
        self.async_client = async_client
        self.top_k = top_k
        self.filters = dict(filters) if filters else None
        self.last_response: SearchResponse | None = None  # for `low_confidence`
        super().__init__(callback_manager=callback_manager)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        response = self.client.search(
            query_bundle.query_str, top_k=self.top_k, filters=self.filters
        )
        self.last_response = response
        return [node_of(r) for r in response.results]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self.async_client is None:
            return self._retrieve(query_bundle)
        response = await self.async_client.search(
            query_bundle.query_str, top_k=self.top_k, filters=self.filters
        )
        self.last_response = response
        return [node_of(r) for r in response.results]
