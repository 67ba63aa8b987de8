"""``OpenSearchIndex``: the ``IndexBackend`` on an OpenSearch cluster (2.19 and 3.x).

Same semantics as the embedded index (``retrieval/index/base.py``), with one
documented difference: OpenSearch has no multi-document transactions, so a
batch is applied in steps (delete documents, index the new chunks, remove each
re-synced document's leftover chunks, rewrite ACLs, refresh) and a concurrent
reader may see a batch half-applied. Every step is idempotent (deterministic
``_id`` s, deletes by document id), a failed step raises, and the pipeline
records its manifest only after ``apply`` returned, so re-running the batch
repairs any partial state. A re-synced document is never absent in between:
its new chunks are written before its old ones are removed. The generation in
the mapping's ``_meta`` is bumped *before* a batch's first write, so a batch
cut short never leaves the index looking like the commit before it.

Example::

    index = OpenSearchIndex.open(settings.index, create=True, dimensions=384)
    index.apply(WriteBatch(upserts=records))
    hits = index.search_hybrid("vpn token", vector, Principal.of("alice", ["eng"]), k=10)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from opensearchpy import OpenSearch, helpers
from opensearchpy import exceptions as os_errors

from core.acl import Acl, Principal
from retrieval.index.base import (
    ChunkRecord,
    DocumentState,
    IndexBackendError,
    IndexGeneration,
    IndexNotFoundError,
    IndexStats,
    InvalidBatchError,
    WriteBatch,
    validate_upserts,
)
from retrieval.index.config import IndexConfig
from retrieval.index.opensearch import queries
from retrieval.index.opensearch.bulk import BulkAction, BulkPolicy, BulkWriter
from retrieval.index.opensearch.client import ClusterInfo, build_client, check_ready
from retrieval.index.opensearch.documents import (
    ACL_FIELDS,
    acl_fields,
    acl_from_source,
    from_source,
    os_id,
    to_source,
)
from retrieval.index.opensearch.errors import OpenSearchUnavailableError
from retrieval.index.opensearch.lifecycle import (
    IndexLayout,
    alias_targets,
    create_first_index,
    mapping_dimensions,
    read_generation,
    version_of,
    write_generation,
)
from retrieval.models import NO_FILTERS, ScoredId, SearchFilters

log = logging.getLogger(__name__)

_TERMS_BATCH = 10_000
_DBQ_ATTEMPTS = 3


class OpenSearchIndex:
    """Hybrid BM25 + k-NN index in OpenSearch; implements ``IndexBackend``.

    Use :meth:`open`; the constructor makes no request.

    :param hybrid_combination: ``"normalization"`` (min-max + weighted arithmetic
        mean) or ``"rrf"``, the search pipeline :meth:`search_hybrid` uses.
    :param pagination_depth: results per shard and subquery in a hybrid search.
    :param knn_ef_search: the HNSW candidate queue of every k-NN query (``None``: the
        engine's default, which for Lucene is ``k``).
    """

    def __init__(
        self,
        client: OpenSearch,
        cluster: ClusterInfo,
        layout: IndexLayout,
        *,
        hybrid_combination: queries.Combination = "normalization",
        pagination_depth: int = 100,
        knn_ef_search: int | None = None,
        bulk_policy: BulkPolicy | None = None,
        hosts: Sequence[str] = (),
    ):
        if hybrid_combination not in ("normalization", "rrf"):
            raise ValueError(
                f"unknown hybrid combination {hybrid_combination!r} (valid: normalization, rrf)"
            )
        if not 1 <= pagination_depth <= queries.MAX_K:
            raise ValueError(f"pagination_depth must be within 1..10000, got {pagination_depth}")
        self.client = client
        self.cluster = cluster
        self.layout = layout
        self.alias = layout.alias
        self.hybrid_combination = hybrid_combination
        self.pagination_depth = pagination_depth
        if knn_ef_search is not None and not 1 <= knn_ef_search <= queries.MAX_K:
            raise ValueError(f"knn_ef_search must be within 1..10000, got {knn_ef_search}")
        self.knn_ef_search = knn_ef_search
        self.bulk_policy = bulk_policy or BulkPolicy()
        self.hosts = list(hosts)
        self._dimensions: int | None = None
        self._exists = False
        self._pipelines: set[str] = set()
        self._closed = False

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        config: IndexConfig,
        *,
        create: bool = False,
        dimensions: int | None = None,
        client: OpenSearch | None = None,
        bulk_policy: BulkPolicy | None = None,
    ) -> OpenSearchIndex:
        """Connect, check the cluster, and attach to the alias ``<index_prefix>-chunks``.

        :param create: create the first physical index (now when ``dimensions``
            is known, else at the first upsert) when the alias does not exist.
        :raises OpenSearchUnavailableError: unreachable, refused or too old (the message says).
        :raises IndexNotFoundError: no alias yet and ``create`` is false.
        :raises IndexBackendError: the existing index holds vectors of other dimensions.
        """
        if dimensions is not None and dimensions < 1:
            raise ValueError(f"dimensions must be >= 1, got {dimensions}")
        client = client or build_client(config)
        cluster = check_ready(client, list(config.hosts))
        layout = IndexLayout(
            prefix=config.index_prefix,
            engine=config.knn_engine,
            shards=config.number_of_shards,
            replicas=config.number_of_replicas,
        )
        index = cls(
            client,
            cluster,
            layout,
            hybrid_combination=config.hybrid_combination,
            pagination_depth=config.pagination_depth,
            knn_ef_search=config.knn_ef_search,
            bulk_policy=bulk_policy,
            hosts=config.hosts,
        )
        index._attach(create=create, dimensions=dimensions)
        return index

    def _attach(self, *, create: bool, dimensions: int | None) -> None:
        targets = alias_targets(self.client, self.alias)
        if targets:
            existing = mapping_dimensions(self.client, targets[0])
            if dimensions is not None and existing != dimensions:
                raise IndexBackendError(
                    f"the OpenSearch index {targets[0]} holds {existing}-dimensional vectors, "
                    f"the caller uses {dimensions}; run `trove index rebuild` after changing "
                    "the embedding model, or use a new index_prefix"
                )
            self._dimensions, self._exists = existing, True
            self._add_missing_fields(targets[0], existing)
            return
        if not create:
            raise IndexNotFoundError(
                f"no OpenSearch index behind alias {self.alias!r} at {', '.join(self.hosts)}; "
                "run `trove ingest` to build one"
            )
        if dimensions is not None:
            self._create(dimensions)

    def _add_missing_fields(self, physical: str, dimensions: int) -> None:
        """Add the fields the mapping gained since the index was created (additive)."""
        mapping = self.client.indices.get_mapping(index=physical)
        have = next(iter(mapping.values()))["mappings"].get("properties", {})
        wanted = self.layout.body(dimensions)["mappings"]["properties"]
        conflicts = queries.mapping_conflicts(have, wanted)
        if conflicts:
            raise IndexBackendError(
                f"the OpenSearch index {physical} (behind alias {self.alias!r}) has a mapping "
                f"Trove cannot use: {'; '.join(conflicts)}. Use a new index_prefix, or delete "
                "the index and run `trove ingest` again"
            )
        missing = {name: spec for name, spec in wanted.items() if name not in have}
        if missing:
            self.client.indices.put_mapping(index=physical, body={"properties": missing})

    def _create(self, dimensions: int) -> None:
        name = create_first_index(self.client, self.layout, dimensions)
        self._dimensions = mapping_dimensions(self.client, name)
        if self._dimensions != dimensions:
            raise IndexBackendError(
                f"the OpenSearch index {name} holds {self._dimensions}-dimensional vectors, "
                f"the caller uses {dimensions}"
            )
        self._exists = True

    def physical_index(self) -> str | None:
        """The versioned index the alias points at now (None before the first write)."""
        targets = alias_targets(self.client, self.alias)
        return targets[0] if targets else None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.close()

    def __enter__(self) -> OpenSearchIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise IndexBackendError(f"the OpenSearch index {self.alias!r} is closed")

    # ------------------------------------------------------------------ searching

    def _hits(self, body: dict[str, Any], **params: Any) -> list[dict[str, Any]]:
        response = self.client.search(index=self.alias, body=body, **params)
        return response["hits"]["hits"]

    def search_lexical(
        self, query: str, principal: Principal, k: int, filters: SearchFilters = NO_FILTERS
    ) -> list[ScoredId]:
        """BM25 (english analyser) top-k among the chunks ``principal`` may read.

        Only chunks containing at least one query term; a query of stop words
        only returns nothing.
        """
        _check_search_args(principal, k, filters)
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        self._check_open()
        if not self._exists or not query.strip():
            return []
        body = queries.lexical_query(query, principal, min(k, queries.MAX_K), filters)
        return [_scored(h) for h in self._hits(body)]

    def search_dense(
        self, vector: np.ndarray, principal: Principal, k: int, filters: SearchFilters = NO_FILTERS
    ) -> list[ScoredId]:
        """Cosine top-k among the chunks ``principal`` may read (efficient k-NN filter).

        Scores are cosine similarities (OpenSearch's ``(1 + cos) / 2`` mapped back),
        as in the embedded index. HNSW is approximate; with the filter narrowing
        to few chunks the engine searches exactly.
        """
        _check_search_args(principal, k, filters)
        self._check_open()
        query = self._query_vector(vector)
        if not self._exists:
            return []
        body = queries.knn_query(
            query, principal, min(k, queries.MAX_K), filters, ef_search=self.knn_ef_search
        )
        return [ScoredId(_chunk_id(h), 2.0 * float(h["_score"]) - 1.0) for h in self._hits(body)]

    def search_hybrid(
        self,
        query: str,
        vector: np.ndarray,
        principal: Principal,
        k: int,
        filters: SearchFilters = NO_FILTERS,
        *,
        dense_weight: float = 0.5,
        rrf_k: int = 60,
    ) -> list[ScoredId]:
        """Lexical and k-NN in one ``hybrid`` request, fused by the search pipeline.

        The ACL and filters apply inside both subqueries (``hybrid.filter`` on 3.x,
        each subquery on 2.19). Scores are the pipeline's combined scores.

        :param dense_weight: the k-NN share (lexical gets ``1 - dense_weight``).
        :param rrf_k: the RRF rank constant (``hybrid_combination: rrf`` only).
        """
        _check_search_args(principal, k, filters)
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        self._check_open()
        query_vector = self._query_vector(vector)
        if not self._exists:
            return []
        pipeline = self.ensure_search_pipeline(dense_weight=dense_weight, rrf_k=rrf_k)
        body = queries.hybrid_query(
            query,
            query_vector,
            principal,
            min(k, queries.MAX_K),
            filters,
            version=self.cluster.version,
            pagination_depth=self.pagination_depth,
            ef_search=self.knn_ef_search,
        )
        return [_scored(h) for h in self._hits(body, search_pipeline=pipeline)]

    def ensure_search_pipeline(self, *, dense_weight: float = 0.5, rrf_k: int = 60) -> str:
        """Create (once per process) the search pipeline for these weights; its name."""
        name = queries.pipeline_name(
            self.layout.prefix, self.hybrid_combination, dense_weight, rrf_k
        )
        if name not in self._pipelines:
            body = queries.pipeline_body(
                self.hybrid_combination,
                version=self.cluster.version,
                dense_weight=dense_weight,
                rrf_k=rrf_k,
            )
            self.client.search_pipeline.put(id=name, body=body)
            self._pipelines.add(name)
        return name

    def _query_vector(self, vector: np.ndarray) -> np.ndarray:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if self._dimensions and query.shape[0] != self._dimensions:
            raise ValueError(
                f"query vector has {query.shape[0]} dimensions, the index {self._dimensions}"
            )
        norm = float(np.linalg.norm(query))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError(f"query vector must be finite and non-zero (norm {norm})")
        return query / norm

    # ------------------------------------------------------------------ reading records

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
        self._check_open()
        if not self._exists or not chunk_ids:
            return []
        found: dict[str, ChunkRecord] = {}
        wanted = list(dict.fromkeys(chunk_ids))
        for start in range(0, len(wanted), 1000):
            part = wanted[start : start + 1000]
            response = self.client.mget(
                index=self.alias,
                body={"ids": [os_id(c) for c in part]},
                params={"_source_includes": ",".join(queries.record_source()["includes"])},
            )
            for doc in response["docs"]:
                if doc.get("found"):
                    record = from_source(doc["_source"])
                    found[record.chunk_id] = record
        return [found[c] for c in chunk_ids if c in found]

    def _scan(self, query: dict[str, Any], source: Any) -> Any:
        return helpers.scan(
            self.client,
            index=self.alias,
            query={**query, "_source": source},
            size=1000,
            preserve_order=False,
        )

    def document_chunks(self, doc_id: str) -> list[ChunkRecord]:
        self._check_open()
        if not self._exists:
            return []
        hits = self._scan(queries.docs_query([doc_id]), queries.record_source())
        return sorted((from_source(h["_source"]) for h in hits), key=lambda r: r.ord)

    def doc_ids(self) -> set[str]:
        self._check_open()
        if not self._exists:
            return set()
        out: set[str] = set()
        after = None
        while True:
            response = self.client.search(index=self.alias, body=queries.doc_ids_page(after))
            agg = response["aggregations"]["docs"]
            out.update(b["key"]["doc_id"] for b in agg["buckets"])
            after = agg.get("after_key")
            if not agg["buckets"] or after is None:
                return out

    def all_acls(self) -> Mapping[str, Acl]:
        self._check_open()
        if not self._exists:
            return {}
        hits = self._scan({"query": {"match_all": {}}}, {"includes": ["chunk_id", *ACL_FIELDS]})
        return {h["_source"]["chunk_id"]: acl_from_source(h["_source"]) for h in hits}

    def index_generation(self) -> IndexGeneration | None:
        """The generation in the mapping's ``_meta`` (None: nothing written yet, or an
        index behind the alias that Trove did not create)."""
        self._check_open()
        physical = self.physical_index() if self._exists else None
        return read_generation(self.client, physical) if physical else None

    def document_states(self, source: str) -> dict[str, DocumentState]:
        """doc_id -> chunks, version and ACL fingerprint, from one composite aggregation
        over ``(doc_id, doc_version, acl_fingerprint)`` (paged, exact)."""
        self._check_open()
        if not self._exists:
            return {}
        out: dict[str, DocumentState] = {}
        after = None
        while True:
            body = _document_states_page(source, after)
            agg = self.client.search(index=self.alias, body=body)["aggregations"]["docs"]
            for bucket in agg["buckets"]:
                key = bucket["key"]
                state = DocumentState(
                    int(bucket["doc_count"]), key["doc_version"], key["acl_fingerprint"]
                )
                doc_id = key["doc_id"]
                out[doc_id] = out[doc_id].merged(state) if doc_id in out else state
            after = agg.get("after_key")
            if not agg["buckets"] or after is None:
                return out

    def stats(self) -> IndexStats:
        self._check_open()
        if not self._exists:
            return IndexStats(0, 0, self._dimensions or 0, 0, 0)
        response = self.client.search(index=self.alias, body=queries.stats_body())
        chunks = int(response["hits"]["total"]["value"])
        documents = int(response["aggregations"]["documents"]["value"]) if chunks else 0
        store = self.client.indices.stats(index=self.alias, metric="store")
        size = int(store["_all"]["primaries"]["store"]["size_in_bytes"])
        physical = self.physical_index()
        generation = version_of(self.layout.prefix, physical or "") or 0
        return IndexStats(chunks, documents, self._dimensions or 0, generation, size)

    # ------------------------------------------------------------------ writing

    def apply(self, batch: WriteBatch) -> None:
        """Apply ``batch``: deletes, then upserts (replacing each document's chunks),
        then ACL updates; refresh once at the end so the next search sees it.

        :raises InvalidBatchError: malformed batch; nothing was written.
        :raises BulkWriteError: some items were refused (after retries); re-run the batch.
        :raises OpenSearchUnavailableError: the cluster went away part-way; re-run the batch.
        """
        try:
            self._apply(batch)
        except os_errors.ConnectionError as exc:  # ConnectionTimeout included
            raise OpenSearchUnavailableError(
                f"OpenSearch at {', '.join(self.hosts) or 'the configured hosts'} became "
                f"unreachable while applying a batch ({exc.__class__.__name__}: {exc.info}); "
                "the batch is partly applied and not recorded: run it again (`trove ingest`) "
                "once the cluster is back"
            ) from exc

    def _apply(self, batch: WriteBatch) -> None:
        if not isinstance(batch, WriteBatch):
            raise TypeError(f"apply takes a WriteBatch, got {type(batch).__name__}")
        self._check_open()
        if batch.empty:
            return
        dims = self._check_upserts(batch)
        if not self._exists:
            if not batch.upserts:
                return  # nothing stored yet, so nothing to delete or re-permission
            self._create(dims)
        self._check_owners(batch)
        self._next_generation()
        upserted_docs = {r.doc_id for r in batch.upserts}
        writer = BulkWriter(self.client, self.bulk_policy, require_alias=True)

        doomed = sorted(set(batch.delete_docs) - upserted_docs)
        for part in queries.terms_batches(doomed, _TERMS_BATCH):
            self._delete_by_query(queries.docs_query(part), f"deleting documents {part[:3]}…")

        if batch.upserts:
            records = [
                dataclasses.replace(r, acl=batch.acl_updates[r.doc_id])
                if r.doc_id in batch.acl_updates
                else r
                for r in batch.upserts
            ]
            actions = (
                BulkAction.index_doc(self.alias, os_id(r.chunk_id), to_source(r)) for r in records
            )
            writer.write(actions).raise_for_failures(f"indexing into {self.alias}")
            self._remove_stale_chunks(records)

        acl_only = {d: a for d, a in batch.acl_updates.items() if d not in upserted_docs}
        if acl_only:
            self._update_acls(acl_only, writer)
        self.refresh()

    def _next_generation(self) -> None:
        """Name a new generation before writing: whatever this batch leaves behind, even
        cut short, is never taken for the commit before it."""
        physical = self.physical_index()
        if physical is None:
            raise IndexNotFoundError(f"alias {self.alias!r} points at no index")
        current = read_generation(self.client, physical)
        # An index without a generation (made before they existed, or not by Trove)
        # gets a new id: the pipeline then checks it document by document.
        following = current.next() if current else IndexGeneration.first().next()
        write_generation(self.client, physical, following)

    def refresh(self) -> None:
        """Make every write so far visible to searches (one ``_refresh``)."""
        if self._exists:
            self.client.indices.refresh(index=self.alias)

    def _check_upserts(self, batch: WriteBatch) -> int:
        return validate_upserts(batch.upserts, self._dimensions)

    def _check_owners(self, batch: WriteBatch) -> None:
        """Refuse a chunk id that a live document not replaced by this batch owns."""
        replaced = set(batch.delete_docs) | {r.doc_id for r in batch.upserts}
        wanted = {r.chunk_id: r.doc_id for r in batch.upserts}
        for part in queries.terms_batches(wanted, _TERMS_BATCH):
            for hit in self._hits(queries.chunk_owner_query(part)):
                owner = hit["_source"]["doc_id"]
                chunk_id = hit["_source"]["chunk_id"]
                if owner not in replaced:
                    raise InvalidBatchError(
                        f"chunk id {chunk_id!r} (document {wanted[chunk_id]!r}) is already used "
                        f"by document {owner!r}"
                    )

    def _delete_by_query(self, body: dict[str, Any], what: str) -> int:
        """Delete what ``body`` matches; conflicts (a concurrent write) are retried."""
        deleted = 0
        for _ in range(_DBQ_ATTEMPTS):
            response = self.client.delete_by_query(
                index=self.alias, body=body, params={"conflicts": "proceed", "refresh": "true"}
            )
            if response.get("failures"):
                raise IndexBackendError(
                    f"{what}: delete-by-query failed: {response['failures'][:3]}"
                )
            deleted += int(response.get("deleted", 0))
            if not response.get("version_conflicts"):
                return deleted
        raise IndexBackendError(
            f"{what}: documents kept changing during delete-by-query "
            f"({response.get('version_conflicts')} version conflicts after {_DBQ_ATTEMPTS} tries)"
        )

    def _remove_stale_chunks(self, records: Sequence[ChunkRecord]) -> None:
        by_doc: dict[str, list[str]] = {}
        for r in records:
            by_doc.setdefault(r.doc_id, []).append(r.chunk_id)
        group_docs: list[str] = []
        group_keep: list[str] = []
        for doc_id in sorted(by_doc):
            keep = by_doc[doc_id]
            if group_docs and len(group_keep) + len(keep) > _TERMS_BATCH:
                self._delete_by_query(
                    queries.stale_chunks_query(group_docs, group_keep), "removing stale chunks"
                )
                group_docs, group_keep = [], []
            group_docs.append(doc_id)
            group_keep.extend(keep)
        if group_docs:
            self._delete_by_query(
                queries.stale_chunks_query(group_docs, group_keep), "removing stale chunks"
            )

    def _update_acls(self, acls: Mapping[str, Acl], writer: BulkWriter) -> None:
        """Rewrite only the ACL fields of every chunk of these documents (no re-embedding)."""

        def actions():
            for part in queries.terms_batches(acls, _TERMS_BATCH):
                hits = self._scan(queries.docs_query(part), {"includes": ["doc_id"]})
                for hit in hits:
                    doc = acl_fields(acls[hit["_source"]["doc_id"]])
                    yield BulkAction.update_doc(self.alias, hit["_id"], doc)

        # Materialise first: updating while scrolling the same documents is allowed but
        # would make the scroll's view and the writes interleave needlessly.
        planned = list(actions())
        writer.write(planned).raise_for_failures(f"updating ACLs in {self.alias}")


def _document_states_page(source: str, after: dict[str, Any] | None) -> dict[str, Any]:
    """One page of (doc_id, doc_version, acl_fingerprint) buckets of ``source``'s chunks."""
    composite: dict[str, Any] = {
        "size": 1000,
        "sources": [
            {"doc_id": {"terms": {"field": "doc_id"}}},
            {"doc_version": {"terms": {"field": "doc_version"}}},
            {"acl_fingerprint": {"terms": {"field": "acl_fingerprint"}}},
        ],
    }
    if after is not None:
        composite["after"] = after
    return {
        "size": 0,
        "query": {"bool": {"filter": [{"term": {"source_id": source}}]}},
        "aggs": {"docs": {"composite": composite}},
    }


def _chunk_id(hit: dict[str, Any]) -> str:
    return hit["_source"]["chunk_id"]


def _scored(hit: dict[str, Any]) -> ScoredId:
    return ScoredId(_chunk_id(hit), float(hit["_score"]))


def _check_search_args(principal: Principal, k: int, filters: SearchFilters) -> None:
    if not isinstance(principal, Principal):
        raise TypeError(f"a search needs a Principal, got {type(principal).__name__}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if not isinstance(filters, SearchFilters):
        raise TypeError(f"filters must be SearchFilters, got {type(filters).__name__}")
