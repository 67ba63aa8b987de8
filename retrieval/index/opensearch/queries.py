"""Request bodies for OpenSearch, as pure functions (pinned by request-shape tests).

Nothing here talks to a cluster. Versions are ``(major, minor)`` tuples; where a
body differs by version the function takes one. Shapes follow the OpenSearch
docs; the minimum versions are in ``docs/opensearch.md``.

Permission filtering (:func:`acl_filter`) is exactly :meth:`core.acl.Acl.permits`:

* tenant: the chunk has no ``tenant_id``, or it equals the principal's tenant
  (a principal without a tenant reads only tenant-less chunks);
* allow: ``acl_public`` or the user in ``acl_allow_users`` or a group in
  ``acl_allow_groups`` (an empty ACL matches none of these: fail closed);
* deny: neither the user in ``acl_deny_users`` nor a group in
  ``acl_deny_groups`` (``must_not``, so deny wins over public);
* layers: a chunk with ``acl_layer_count`` n must hold, for every position
  i < n, a token ``i|u:{user}`` or ``i|g:{group}`` of the principal. Chunks
  without layers (the count is 0 or absent) pass at once;
* identity form: names are indexed and queried in their canonical form
  (:mod:`core.identity`; the principal is canonical by construction). A chunk
  indexed before that form (no ``acl_identity_form`` of the current version)
  that carries a deny is withheld: its deny may be spelled in a form the
  canonical name no longer matches. Such an ACL's fingerprint changed with the
  form, so the next ingest rewrites it (ACL-only) and the chunk is readable again.

The clause always goes *inside* retrieval (``bool.filter``, the efficient k-NN
``filter``, ``hybrid.filter`` on 3.x or every subquery on 2.19), never in
``post_filter``, which would rank first and filter after.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from core.acl import Principal
from core.identity import IDENTITY_FORM
from retrieval.analysis import ENGLISH_STOP_WORDS
from retrieval.index.opensearch.documents import (
    ACL_IDENTITY_FORM_FIELD,
    MAX_ACL_LAYERS,
    RECORD_FIELDS,
    TEXT_FIELD,
    VECTOR_FIELD,
    layer_token,
)
from retrieval.index.opensearch.documents import format_datetime as _iso
from retrieval.models import SearchFilters

Version = tuple[int, int]
Body = dict[str, Any]

MIN_VERSION: Version = (2, 19)  # pagination_depth, RRF, faiss cosinesimil
HYBRID_FILTER_VERSION: Version = (3, 0)
RRF_WEIGHTS_VERSION: Version = (3, 1)
MAX_K = 10_000  # k-NN `k` and default index.max_result_window
MAX_TERMS = 65_536  # index.max_terms_count: the most values one `terms` query takes

# The embedded index scores the chunk text only; so does the lexical query here,
# so that both backends return the same candidates. `title` is indexed (english)
# for callers that want to boost it.
LEXICAL_FIELDS: tuple[str, ...] = (TEXT_FIELD,)
# Text is analysed as the embedded index analyses it (retrieval/analysis.py): split
# on anything that is not a letter or digit, lower-cased, the same stop words, then
# Snowball (Porter2) English stemming. Lucene's built-in `english` analyzer (standard
# tokenizer, Porter) ranked differently enough to move MRR past the parity bound.
TEXT_ANALYZER = "trove_text"


def text_analysis() -> Body:
    """The index ``analysis`` settings that define :data:`TEXT_ANALYZER`."""
    return {
        "tokenizer": {"trove_words": {"type": "pattern", "pattern": "[^\\p{L}\\p{N}]+"}},
        "filter": {
            "trove_stop": {"type": "stop", "stopwords": sorted(ENGLISH_STOP_WORDS)},
            "trove_stem": {"type": "stemmer", "language": "porter2"},
        },
        "analyzer": {
            TEXT_ANALYZER: {
                "type": "custom",
                "tokenizer": "trove_words",
                "filter": ["lowercase", "trove_stop", "trove_stem"],
            }
        },
    }


HIT_SOURCE: Body = {"includes": ["chunk_id"]}

Engine = Literal["lucene", "faiss"]
# Every knn_vector mapping Trove writes names this engine. OpenSearch's default
# (faiss since 2.18) needs native libraries that a plugin zip from Maven Central
# lacks: a faiss field there fails with UnsatisfiedLinkError and can take the
# node down. Lucene HNSW has efficient filtering (the permission filter inside
# `knn`), which is what the conformance suite verifies on a real node.
KNN_ENGINE = "lucene"
Combination = Literal["normalization", "rrf"]


# ---------------------------------------------------------------- index and mapping


def index_body(
    dimensions: int,
    *,
    engine: Engine = "lucene",
    shards: int = 1,
    replicas: int = 1,
    refresh_interval: str = "1s",
    m: int = 16,
    ef_construction: int = 128,
) -> Body:
    """``PUT /<index>``: settings and a strict mapping (unknown fields are errors).

    ``index.knn`` is static: it must be true at creation for approximate k-NN.
    Text fields use the built-in ``english`` analyzer; ACL fields are
    ``keyword`` (analysis would split ids such as ``User-1``).
    """
    if not 1 <= dimensions <= 16_000:
        raise ValueError(f"dimensions must be within 1..16000, got {dimensions}")
    check_engine(engine)
    keyword = {"type": "keyword"}
    stored_only_keyword = {"type": "keyword", "index": False, "doc_values": False}
    stored_only_int = {"type": "integer", "index": False, "doc_values": False}
    english = {"type": "text", "analyzer": TEXT_ANALYZER}
    return {
        "settings": {
            "index": {
                "knn": True,
                "number_of_shards": shards,
                "number_of_replicas": replicas,
                "refresh_interval": refresh_interval,
            },
            "analysis": text_analysis(),
        },
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "chunk_id": keyword,
                "doc_id": keyword,
                "source_id": keyword,
                "chunk_ord": {"type": "integer"},
                TEXT_FIELD: english,
                "title": {
                    **english,
                    "fields": {"raw": {"type": "keyword", "ignore_above": 512}},
                },
                "url": {"type": "keyword", "index": False},
                "path": keyword,
                "section": stored_only_keyword,
                "pages": stored_only_int,
                "char_start": stored_only_int,
                "char_end": stored_only_int,
                "doc_version": keyword,
                "doc_type": keyword,
                "content_hash": keyword,
                "modified_at": {"type": "date"},
                "updated_at": {"type": "date"},
                # Chunk annotations (risk flags, PII counts): stored, never searched.
                "metadata": {"type": "object", "enabled": False},
                "tenant_id": keyword,
                "acl_public": {"type": "boolean"},
                "acl_allow_users": keyword,
                "acl_allow_groups": keyword,
                "acl_deny_users": keyword,
                "acl_deny_groups": keyword,
                "acl_layer_count": {"type": "integer"},
                "acl_layers": keyword,
                "acl_fingerprint": keyword,
                ACL_IDENTITY_FORM_FIELD: {"type": "integer"},
                VECTOR_FIELD: {
                    "type": "knn_vector",
                    "dimension": dimensions,
                    "space_type": "cosinesimil",
                    "method": {
                        "name": "hnsw",
                        "engine": engine,
                        "parameters": {"m": m, "ef_construction": ef_construction},
                    },
                },
            },
        },
    }


def check_engine(engine: str) -> None:
    """Refuse any k-NN engine but Lucene: a mapping without it is never written."""
    if engine != KNN_ENGINE:
        raise ValueError(
            f"k-NN engine {engine!r} is not supported: Trove maps every knn_vector with "
            f"engine {KNN_ENGINE!r} (faiss needs native libraries a plain node may lack, "
            "and Trove's filtered k-NN is verified on Lucene HNSW); set index.knn_engine: lucene"
        )


def mapping_conflicts(have: Body, wanted: Body) -> list[str]:
    """Fields an existing mapping types differently from Trove's (``properties`` of each).

    An ACL field mapped as ``text`` would be analysed (``User-1`` -> ``user``, ``1``),
    so a term filter could match the wrong principal: such an index is refused.
    """
    conflicts = []
    for name, spec in wanted.items():
        got = have.get(name)
        if got is None:
            continue
        want_type, got_type = spec.get("type", "object"), got.get("type", "object")
        if want_type != got_type:
            conflicts.append(f"{name!r} is mapped as {got_type}, Trove needs {want_type}")
        elif want_type == "text" and got.get("analyzer") != spec.get("analyzer"):
            conflicts.append(
                f"{name!r} uses analyzer {got.get('analyzer', 'standard')!r}, "
                f"Trove needs {spec.get('analyzer')!r}"
            )
    return conflicts


def bulk_load_settings() -> Body:
    """Settings while a new index is bulk-loaded (no refreshes, no replicas)."""
    return {"index": {"refresh_interval": "-1", "number_of_replicas": 0}}


def serving_settings(replicas: int, refresh_interval: str = "1s") -> Body:
    return {"index": {"refresh_interval": refresh_interval, "number_of_replicas": replicas}}


def alias_swap_actions(alias: str, old: str | None, new: str, *, drop_old: bool = True) -> Body:
    """``POST /_aliases``: point ``alias`` at ``new`` atomically.

    ``remove_index`` removes the old index together with its aliases, in the same
    atomic step as the ``add``; without ``drop_old`` the alias is only moved.
    """
    actions: list[Body] = [{"add": {"index": new, "alias": alias, "is_write_index": True}}]
    if old is not None and old != new:
        if drop_old:
            actions.append({"remove_index": {"index": old}})
        else:
            actions.insert(0, {"remove": {"index": old, "alias": alias}})
    return {"actions": actions}


# ---------------------------------------------------------------- filters


def legacy_deny_clause() -> Body:
    """Chunks with a deny indexed before the current identity form (see the module doc)."""
    return {
        "bool": {
            "must_not": [{"range": {ACL_IDENTITY_FORM_FIELD: {"gte": IDENTITY_FORM}}}],
            "should": [
                {"exists": {"field": "acl_deny_users"}},
                {"exists": {"field": "acl_deny_groups"}},
            ],
            "minimum_should_match": 1,
        }
    }


def acl_filter(principal: Principal) -> Body:
    """The clause a chunk must match for ``principal`` to read it (see the module doc)."""
    if not isinstance(principal, Principal):
        raise TypeError(f"a search needs a Principal, got {type(principal).__name__}")
    no_tenant: Body = {"bool": {"must_not": [{"exists": {"field": "tenant_id"}}]}}
    if principal.tenant is None:
        tenant: Body = no_tenant
    else:
        tenant = {
            "bool": {
                "should": [no_tenant, {"term": {"tenant_id": principal.tenant}}],
                "minimum_should_match": 1,
            }
        }
    groups = sorted(principal.groups)
    allow: list[Body] = [
        {"term": {"acl_public": True}},
        {"term": {"acl_allow_users": principal.user}},
    ]
    deny: list[Body] = [{"term": {"acl_deny_users": principal.user}}]
    if groups:
        allow.append({"terms": {"acl_allow_groups": groups}})
        deny.append({"terms": {"acl_deny_groups": groups}})
    deny.append(legacy_deny_clause())
    return {
        "bool": {
            "filter": [
                tenant,
                {"bool": {"should": allow, "minimum_should_match": 1}},
                layers_clause(principal),
            ],
            "must_not": deny,
        }
    }


def layers_clause(principal: Principal) -> Body:
    """Every restriction layer of the chunk admits ``principal`` (see the module doc)."""
    groups = sorted(principal.groups)

    def tokens(position: int) -> list[str]:
        return [
            layer_token(position, "u", principal.user),
            *(layer_token(position, "g", g) for g in groups),
        ]

    per_layer: list[Body] = [
        {
            "bool": {
                "should": [
                    {"range": {"acl_layer_count": {"lte": i}}},
                    {"terms": {"acl_layers": tokens(i)}},
                ],
                "minimum_should_match": 1,
            }
        }
        for i in range(MAX_ACL_LAYERS)
    ]
    return {
        "bool": {
            "should": [
                {"bool": {"must_not": [{"exists": {"field": "acl_layer_count"}}]}},
                {"range": {"acl_layer_count": {"lte": 0}}},
                {"bool": {"filter": per_layer}},
            ],
            "minimum_should_match": 1,
        }
    }


def search_filter_clauses(filters: SearchFilters) -> list[Body]:
    """``SearchFilters`` as filter clauses (they only narrow; empty means none).

    ``modified_after`` is inclusive and ``modified_before`` exclusive; a chunk
    without ``modified_at`` fails any time filter (``range`` needs the field).
    OpenSearch ``date`` fields keep milliseconds.
    """
    if not isinstance(filters, SearchFilters):
        raise TypeError(f"filters must be SearchFilters, got {type(filters).__name__}")
    clauses: list[Body] = []
    if filters.sources:
        clauses.append({"terms": {"source_id": sorted(filters.sources)}})
    if filters.doc_types:
        clauses.append({"terms": {"doc_type": sorted(filters.doc_types)}})
    if filters.path_prefixes:
        clauses.append(
            {
                "bool": {
                    "should": [{"prefix": {"path": p}} for p in filters.path_prefixes],
                    "minimum_should_match": 1,
                }
            }
        )
    bounds: Body = {}
    if filters.modified_after is not None:
        bounds["gte"] = _iso(filters.modified_after)
    if filters.modified_before is not None:
        bounds["lt"] = _iso(filters.modified_before)
    if bounds:
        clauses.append({"range": {"modified_at": bounds}})
    return clauses


def access_filter(principal: Principal, filters: SearchFilters) -> Body:
    """The ACL clause and the search filters as one query object (a ``bool``)."""
    return {"bool": {"filter": [acl_filter(principal), *search_filter_clauses(filters)]}}


# ---------------------------------------------------------------- searches


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer within 1..{MAX_K}, got {k!r}")


def _vector_list(vector: np.ndarray) -> list[float]:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"query vector must be finite and non-zero (norm {norm})")
    return [float(x) for x in v]


def _match(query: str, fields: Sequence[str]) -> Body:
    if len(fields) == 1:
        return {"match": {fields[0]: {"query": query}}}
    return {"multi_match": {"query": query, "fields": list(fields)}}


def lexical_query(
    query: str,
    principal: Principal,
    k: int,
    filters: SearchFilters,
    *,
    fields: Sequence[str] = LEXICAL_FIELDS,
) -> Body:
    """BM25 (``english`` analyser) among the readable chunks; any query term matches."""
    _check_k(k)
    return {
        "size": k,
        "_source": HIT_SOURCE,
        "track_total_hits": False,
        "query": {
            "bool": {
                "must": [_match(query, fields)],
                "filter": [access_filter(principal, filters)],
            }
        },
    }


def knn_clause(
    vector: np.ndarray, k: int, filter_: Body | None, *, ef_search: int | None = None
) -> Body:
    """``{"knn": {"embedding": ...}}``; ``filter_`` is the efficient k-NN filter
    (applied during the graph search, so ``k`` readable chunks come back)."""
    _check_k(k)
    inner: Body = {"vector": _vector_list(vector), "k": k}
    if filter_ is not None:
        inner["filter"] = filter_
    if ef_search is not None:
        inner["method_parameters"] = {"ef_search": ef_search}
    return {"knn": {VECTOR_FIELD: inner}}


def knn_query(
    vector: np.ndarray,
    principal: Principal,
    k: int,
    filters: SearchFilters,
    *,
    ef_search: int | None = None,
) -> Body:
    """Cosine k-NN among the readable chunks (the ACL as the efficient filter)."""
    return {
        "size": k,
        "_source": HIT_SOURCE,
        "track_total_hits": False,
        "query": knn_clause(vector, k, access_filter(principal, filters), ef_search=ef_search),
    }


def supports_hybrid_filter(version: Version) -> bool:
    return tuple(version) >= HYBRID_FILTER_VERSION


def hybrid_query(
    query: str,
    vector: np.ndarray,
    principal: Principal,
    k: int,
    filters: SearchFilters,
    *,
    version: Version,
    pagination_depth: int = 100,
    fields: Sequence[str] = LEXICAL_FIELDS,
    ef_search: int | None = None,
) -> Body:
    """One ``hybrid`` request: lexical + k-NN, combined by a search pipeline.

    On 3.x the access clause is ``hybrid.filter`` (ANDed into every subquery,
    the k-NN filter for the knn one); on 2.19 it is repeated inside each
    subquery. ``pagination_depth`` (per shard and subquery) is at least ``k``;
    the k-NN ``k`` matches it so the dense list is as deep as the lexical one.
    ``ef_search`` (when given) widens the HNSW candidate queue of the k-NN subquery.
    """
    _check_k(k)
    if tuple(version) < MIN_VERSION:
        raise ValueError(f"hybrid search needs OpenSearch >= 2.19, got {version}")
    depth = max(k, pagination_depth)
    if depth > MAX_K:
        raise ValueError(f"pagination_depth must be <= {MAX_K}, got {depth}")
    access = access_filter(principal, filters)
    lexical = _match(query, fields)
    hybrid: Body
    if supports_hybrid_filter(version):
        hybrid = {
            "filter": access,
            "pagination_depth": depth,
            "queries": [lexical, knn_clause(vector, depth, None, ef_search=ef_search)],
        }
    else:
        hybrid = {
            "pagination_depth": depth,
            "queries": [
                {"bool": {"must": [lexical], "filter": [access]}},
                knn_clause(vector, depth, access, ef_search=ef_search),
            ],
        }
    return {
        "size": k,
        "_source": HIT_SOURCE,
        "track_total_hits": False,
        "query": {"hybrid": hybrid},
    }


# ---------------------------------------------------------------- search pipelines


def pipeline_name(prefix: str, combination: Combination, dense_weight: float, rrf_k: int) -> str:
    """A name per configuration, so changing weights never edits a pipeline in use."""
    weight = round(dense_weight * 100)
    if combination == "normalization":
        return f"{prefix}-hybrid-minmax-d{weight:03d}"
    if combination == "rrf":
        return f"{prefix}-hybrid-rrf{rrf_k}-d{weight:03d}"
    raise ValueError(f"unknown hybrid combination {combination!r} (valid: normalization, rrf)")


def _weights(dense_weight: float) -> list[float]:
    if not 0.0 <= dense_weight <= 1.0:
        raise ValueError(f"dense_weight must be within [0, 1], got {dense_weight}")
    lexical = round(1.0 - dense_weight, 6)
    return [lexical, round(1.0 - lexical, 6)]  # subquery order; sums to 1.0


def normalization_pipeline(dense_weight: float = 0.5) -> Body:
    """Min-max normalisation, then a weighted arithmetic mean (lexical, dense)."""
    return {
        "description": "Trove hybrid search: min-max + weighted arithmetic mean",
        "phase_results_processors": [
            {
                "normalization-processor": {
                    "normalization": {"technique": "min_max"},
                    "combination": {
                        "technique": "arithmetic_mean",
                        "parameters": {"weights": _weights(dense_weight)},
                    },
                }
            }
        ],
    }


def rrf_pipeline(rank_constant: int = 60, dense_weight: float | None = None) -> Body:
    """Reciprocal rank fusion (2.19+); weights only from 3.1, so ``None`` leaves them out."""
    if rank_constant < 1:
        raise ValueError(f"rank_constant must be >= 1, got {rank_constant}")
    combination: Body = {"technique": "rrf", "rank_constant": rank_constant}
    if dense_weight is not None:
        combination["parameters"] = {"weights": _weights(dense_weight)}
    return {
        "description": "Trove hybrid search: reciprocal rank fusion",
        "phase_results_processors": [{"score-ranker-processor": {"combination": combination}}],
    }


def pipeline_body(
    combination: Combination, *, version: Version, dense_weight: float = 0.5, rrf_k: int = 60
) -> Body:
    if combination == "normalization":
        return normalization_pipeline(dense_weight)
    if combination == "rrf":
        if tuple(version) < MIN_VERSION:
            raise ValueError(f"RRF needs OpenSearch >= 2.19, got {version}")
        if tuple(version) >= RRF_WEIGHTS_VERSION:
            return rrf_pipeline(rrf_k, dense_weight)
        if abs(dense_weight - 0.5) > 1e-9:
            raise ValueError(
                f"RRF weights need OpenSearch >= 3.1 (cluster {version}); use dense_weight "
                f"0.5 or hybrid_combination: normalization, got dense_weight {dense_weight}"
            )
        return rrf_pipeline(rrf_k, None)
    raise ValueError(f"unknown hybrid combination {combination!r} (valid: normalization, rrf)")


# ---------------------------------------------------------------- reads and deletes


def _chunks(values: Sequence[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(values), size):
        yield list(values[i : i + size])


def terms_batches(values: Iterable[str], size: int = 10_000) -> list[list[str]]:
    """Sorted, de-duplicated values split so no ``terms`` query exceeds ``size`` values."""
    if not 1 <= size <= MAX_TERMS:
        raise ValueError(f"size must be within 1..{MAX_TERMS}, got {size}")
    return list(_chunks(sorted(set(values)), size))


def docs_query(doc_ids: Sequence[str]) -> Body:
    """Every chunk of these documents (for delete-by-query and ACL updates)."""
    return {"query": {"bool": {"filter": [{"terms": {"doc_id": list(doc_ids)}}]}}}


def stale_chunks_query(doc_ids: Sequence[str], keep_chunk_ids: Sequence[str]) -> Body:
    """Chunks of these documents other than the ones just written (a re-sync's leftovers)."""
    return {
        "query": {
            "bool": {
                "filter": [{"terms": {"doc_id": list(doc_ids)}}],
                "must_not": [{"terms": {"chunk_id": list(keep_chunk_ids)}}],
            }
        }
    }


def chunk_owner_query(chunk_ids: Sequence[str]) -> Body:
    """Who owns these chunk ids now (to refuse a batch reusing another document's id)."""
    return {
        "size": len(chunk_ids),
        "_source": {"includes": ["chunk_id", "doc_id"]},
        "query": {"bool": {"filter": [{"terms": {"chunk_id": list(chunk_ids)}}]}},
    }


def record_source(*, with_vector: bool = False) -> Body:
    fields = list(RECORD_FIELDS) + ([VECTOR_FIELD] if with_vector else [])
    return {"includes": fields}


def doc_ids_page(after: dict[str, str] | None, size: int = 1_000) -> Body:
    """One page of a composite aggregation over ``doc_id`` (exact, unlike cardinality)."""
    composite: Body = {"size": size, "sources": [{"doc_id": {"terms": {"field": "doc_id"}}}]}
    if after is not None:
        composite["after"] = after
    return {"size": 0, "aggs": {"docs": {"composite": composite}}}


def count_by_source_body(max_sources: int = 10_000) -> Body:
    return {"size": 0, "aggs": {"sources": {"terms": {"field": "source_id", "size": max_sources}}}}


def stats_body() -> Body:
    """Document count (approximate above 40,000 distinct documents)."""
    return {
        "size": 0,
        "track_total_hits": True,
        "aggs": {"documents": {"cardinality": {"field": "doc_id", "precision_threshold": 40000}}},
    }
