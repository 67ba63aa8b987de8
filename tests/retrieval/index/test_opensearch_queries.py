"""Request-body contract tests: what osmem-server cannot run (k-NN, hybrid, search
pipelines) is pinned field by field against the documented shapes, for 2.19 and 3.x.

The ACL clause is also *evaluated* here by a tiny interpreter of the query DSL
subset it uses (bool/term/terms/exists/prefix/range) against documents built by
``to_source``, and compared with ``Acl.permits`` over random ACLs and principals:
the clause means exactly the documented semantics, independently of any server.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from core.acl import Acl, Principal
from retrieval.analysis import ENGLISH_STOP_WORDS
from retrieval.index.opensearch import queries as q
from retrieval.index.opensearch.documents import (
    HASHED_ID_PREFIX,
    MAX_ID_BYTES,
    from_source,
    os_id,
    to_source,
)
from retrieval.models import NO_FILTERS, SearchFilters
from tests.retrieval.builders import DIM, record, unit
from tests.retrieval.index.conformance import all_principals, random_acl

pytestmark = pytest.mark.opensearch

V2_19 = (2, 19)
V3_0 = (3, 0)
ALICE = Principal.of("alice", ["eng", "hr"], tenant="t1")


def keys_anywhere(body: Any) -> set[str]:
    if isinstance(body, dict):
        return set(body) | {k for v in body.values() for k in keys_anywhere(v)}
    if isinstance(body, list):
        return {k for v in body for k in keys_anywhere(v)}
    return set()


# ---------------------------------------------------------------- a DSL subset evaluator


def _values(doc: dict, field: str) -> list:
    v = doc.get(field)
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def matches(query: dict, doc: dict) -> bool:
    ((kind, spec),) = query.items()
    if kind == "bool":
        ok = all(matches(c, doc) for c in spec.get("filter", []) + spec.get("must", []))
        ok = ok and not any(matches(c, doc) for c in spec.get("must_not", []))
        if "should" in spec:
            need = spec.get("minimum_should_match", 1)
            ok = ok and sum(matches(c, doc) for c in spec["should"]) >= need
        return ok
    if kind == "term":
        ((field, value),) = spec.items()
        return value in _values(doc, field)
    if kind == "terms":
        ((field, values),) = spec.items()
        return bool(set(values) & set(_values(doc, field)))
    if kind == "exists":
        return bool(_values(doc, spec["field"]))
    if kind == "prefix":
        ((field, value),) = spec.items()
        return any(str(v).startswith(value) for v in _values(doc, field))
    if kind == "range":
        ((field, bounds),) = spec.items()
        if any(isinstance(b, int | float) for b in bounds.values()):
            nums = _values(doc, field)
            if not nums:
                return False
            n = nums[0]
            return all(
                {"lte": n <= b, "lt": n < b, "gte": n >= b, "gt": n > b}[op]
                for op, b in bounds.items()
            )
        vals = [datetime.fromisoformat(v) for v in _values(doc, field)]
        if not vals:
            return False
        v = vals[0]
        if "gte" in bounds and v < datetime.fromisoformat(bounds["gte"]):
            return False
        return not ("lt" in bounds and v >= datetime.fromisoformat(bounds["lt"]))
    raise AssertionError(f"the evaluator does not know {kind!r}")


def test_acl_clause_means_exactly_acl_permits():
    rng = np.random.default_rng(3)
    acls = [random_acl(rng) for _ in range(150)] + [
        Acl.empty(),
        Acl.public_acl(),
        Acl.public_acl("t1"),
        Acl(public=True, deny_groups=frozenset({"g0"})),
    ]
    docs = [to_source(record(f"d{i}", 0, "x", acl, rng=rng)) for i, acl in enumerate(acls)]
    checked = 0
    for principal in all_principals():
        clause = q.acl_filter(principal)
        for acl, doc in zip(acls, docs, strict=True):
            assert matches(clause, doc) == acl.permits(principal), (principal, acl)
            checked += 1
    assert checked == len(acls) * len(all_principals())


def test_search_filters_mean_the_documented_rules():
    t = [datetime(2024, m, 1, tzinfo=UTC) for m in (1, 2, 3)]
    rng = np.random.default_rng(1)
    specs = [("hr", "pdf", "hr/a", t[0]), ("hr", "md", "hr/x/b", t[1]), ("eng", "md", "e/c", None)]
    docs = {
        path: to_source(
            record(path, 0, "x", Acl.public_acl(), rng=rng, source=s, doc_type=d, path=path,
                   modified_at=m)
        )
        for s, d, path, m in specs
    }  # fmt: skip

    def got(**kw) -> set[str]:
        clause = {"bool": {"filter": q.search_filter_clauses(SearchFilters(**kw))}}
        return {p for p, doc in docs.items() if matches(clause, doc)}

    assert got() == set(docs)
    assert got(sources=frozenset({"hr"})) == {"hr/a", "hr/x/b"}
    assert got(doc_types=frozenset({"md"}), path_prefixes=("hr/",)) == {"hr/x/b"}
    assert got(modified_after=t[1]) == {"hr/x/b"}
    assert got(modified_before=t[1]) == {"hr/a"}
    assert got(modified_after=datetime(2024, 1, 1)) == {"hr/a", "hr/x/b"}  # naive is UTC


# ---------------------------------------------------------------- the ACL clause shape


def test_acl_clause_shape_with_tenant_and_groups():
    assert q.acl_filter(ALICE) == {
        "bool": {
            "filter": [
                {
                    "bool": {
                        "should": [
                            {"bool": {"must_not": [{"exists": {"field": "tenant_id"}}]}},
                            {"term": {"tenant_id": "t1"}},
                        ],
                        "minimum_should_match": 1,
                    }
                },
                {
                    "bool": {
                        "should": [
                            {"term": {"acl_public": True}},
                            {"term": {"acl_allow_users": "alice"}},
                            {"terms": {"acl_allow_groups": ["eng", "hr"]}},
                        ],
                        "minimum_should_match": 1,
                    }
                },
                q.layers_clause(ALICE),
            ],
            "must_not": [
                {"term": {"acl_deny_users": "alice"}},
                {"terms": {"acl_deny_groups": ["eng", "hr"]}},
                q.legacy_deny_clause(),
            ],
        }
    }


def test_acl_clause_without_tenant_reads_only_tenantless_chunks_and_omits_empty_groups():
    clause = q.acl_filter(Principal.of("bob"))
    assert clause["bool"]["filter"][0] == {
        "bool": {"must_not": [{"exists": {"field": "tenant_id"}}]}
    }
    assert clause["bool"]["must_not"] == [
        {"term": {"acl_deny_users": "bob"}},
        q.legacy_deny_clause(),
    ]
    assert "terms" not in keys_anywhere(clause["bool"]["filter"][1])
    with pytest.raises(TypeError, match="Principal"):
        q.acl_filter("bob")  # type: ignore[arg-type]


def test_layers_clause_checks_every_position_with_the_principal_tokens():
    clause = q.layers_clause(ALICE)
    no_layers, zero, per_layer = clause["bool"]["should"]
    assert no_layers == {"bool": {"must_not": [{"exists": {"field": "acl_layer_count"}}]}}
    assert zero == {"range": {"acl_layer_count": {"lte": 0}}}
    positions = per_layer["bool"]["filter"]
    assert len(positions) == 8
    assert positions[2]["bool"]["should"] == [
        {"range": {"acl_layer_count": {"lte": 2}}},
        {"terms": {"acl_layers": ["2|u:alice", "2|g:eng", "2|g:hr"]}},
    ]


def test_acl_layers_round_trip_and_too_many_layers_are_refused():
    from core.acl import AclLayer
    from retrieval.index.opensearch.documents import acl_fields, acl_from_source

    acl = Acl(
        allow_groups=frozenset({"space"}),
        layers=(AclLayer(groups=frozenset({"a"})), AclLayer(users=frozenset({"bob"})), AclLayer()),
    )
    fields = acl_fields(acl)
    assert fields["acl_layer_count"] == 3
    assert acl_from_source(fields) == acl
    deep = Acl(public=True, layers=tuple(AclLayer(users=frozenset({f"u{i}"})) for i in range(9)))
    with pytest.raises(ValueError, match="9 restriction layers"):
        acl_fields(deep)


# ---------------------------------------------------------------- mapping and settings


def test_index_body_mapping():
    body = q.index_body(384)
    assert body["settings"]["index"] == {
        "knn": True,
        "number_of_shards": 1,
        "number_of_replicas": 1,
        "refresh_interval": "1s",
    }
    mapping = body["mappings"]
    assert mapping["dynamic"] == "strict"
    props = mapping["properties"]
    assert props["chunk_text"] == {"type": "text", "analyzer": "trove_text"}
    assert props["title"]["analyzer"] == "trove_text"
    # The analyzer is the embedded index's: its split, stop words and Porter2 stemmer.
    analysis = body["settings"]["analysis"]
    assert analysis["tokenizer"]["trove_words"]["pattern"] == "[^\\p{L}\\p{N}]+"
    assert set(analysis["filter"]["trove_stop"]["stopwords"]) == ENGLISH_STOP_WORDS
    assert analysis["filter"]["trove_stem"] == {"type": "stemmer", "language": "porter2"}
    assert analysis["analyzer"]["trove_text"]["filter"] == ["lowercase", "trove_stop", "trove_stem"]
    assert props["title"]["fields"]["raw"] == {"type": "keyword", "ignore_above": 512}
    for field in (
        "chunk_id",
        "doc_id",
        "source_id",
        "tenant_id",
        "acl_allow_users",
        "acl_allow_groups",
        "acl_deny_users",
        "acl_deny_groups",
        "path",
        "doc_type",
    ):
        assert props[field] == {"type": "keyword"}, field  # fmt: skip
    assert props["acl_public"] == {"type": "boolean"}
    assert props["modified_at"] == {"type": "date"}
    assert props["embedding"] == {
        "type": "knn_vector",
        "dimension": 384,
        "space_type": "cosinesimil",
        "method": {
            "name": "hnsw",
            "engine": "lucene",
            "parameters": {"m": 16, "ef_construction": 128},
        },
    }
    # Every field to_source writes is mapped (the mapping is strict).
    assert set(to_source(record("d", 0, "x", Acl.public_acl()))) <= set(props)


def test_index_body_engine_and_bulk_settings():
    body = q.index_body(16, replicas=0, refresh_interval="-1")
    assert body["mappings"]["properties"]["embedding"]["method"]["engine"] == "lucene"
    # A mapping without engine lucene is never written (faiss needs native libraries).
    for engine in ("faiss", "nmslib"):
        with pytest.raises(ValueError, match="engine"):
            q.index_body(16, engine=engine)  # type: ignore[arg-type]
    assert body["settings"]["index"]["refresh_interval"] == "-1"
    assert body["settings"]["index"]["number_of_replicas"] == 0
    assert q.bulk_load_settings() == {"index": {"refresh_interval": "-1", "number_of_replicas": 0}}
    assert q.serving_settings(1) == {"index": {"refresh_interval": "1s", "number_of_replicas": 1}}
    with pytest.raises(ValueError, match="engine"):
        q.index_body(16, engine="nmslib")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dimensions"):
        q.index_body(0)


def test_alias_swap_is_one_atomic_request():
    assert q.alias_swap_actions("t-chunks", "t-chunks-v0001", "t-chunks-v0002") == {
        "actions": [
            {"add": {"index": "t-chunks-v0002", "alias": "t-chunks", "is_write_index": True}},
            {"remove_index": {"index": "t-chunks-v0001"}},
        ]
    }
    keep = q.alias_swap_actions("t-chunks", "t-chunks-v0001", "t-chunks-v0002", drop_old=False)
    assert keep["actions"][0] == {"remove": {"index": "t-chunks-v0001", "alias": "t-chunks"}}
    assert len(keep["actions"]) == 2
    assert q.alias_swap_actions("a", None, "a-v0001")["actions"] == [
        {"add": {"index": "a-v0001", "alias": "a", "is_write_index": True}}
    ]


# ---------------------------------------------------------------- searches


def test_lexical_query_filters_inside_retrieval():
    body = q.lexical_query("reset vpn token", ALICE, 25, NO_FILTERS)
    assert body["size"] == 25
    assert body["_source"] == {"includes": ["chunk_id"]}
    assert body["query"]["bool"]["must"] == [
        {"match": {"chunk_text": {"query": "reset vpn token"}}}
    ]
    assert body["query"]["bool"]["filter"] == [{"bool": {"filter": [q.acl_filter(ALICE)]}}]
    assert "post_filter" not in keys_anywhere(body)
    multi = q.lexical_query("x", ALICE, 5, NO_FILTERS, fields=("title^2", "chunk_text"))
    assert multi["query"]["bool"]["must"] == [
        {"multi_match": {"query": "x", "fields": ["title^2", "chunk_text"]}}
    ]


def test_knn_query_uses_the_acl_as_efficient_filter():
    rng = np.random.default_rng(0)
    v = unit(rng)
    filters = SearchFilters(sources=frozenset({"hr"}))
    body = q.knn_query(v, ALICE, 10, filters, ef_search=200)
    knn = body["query"]["knn"]["embedding"]
    assert knn["vector"] == pytest.approx([float(x) for x in v])
    assert knn["k"] == 10 and body["size"] == 10
    assert knn["filter"] == {
        "bool": {"filter": [q.acl_filter(ALICE), {"terms": {"source_id": ["hr"]}}]}
    }
    assert knn["method_parameters"] == {"ef_search": 200}
    assert set(body) == {"size", "_source", "track_total_hits", "query"}  # no post_filter
    with pytest.raises(ValueError, match="non-zero"):
        q.knn_query(np.zeros(DIM), ALICE, 10, NO_FILTERS)
    with pytest.raises(ValueError, match="k must be"):
        q.knn_query(v, ALICE, 10_001, NO_FILTERS)


def test_hybrid_query_on_3x_uses_hybrid_filter():
    v = unit(np.random.default_rng(0))
    body = q.hybrid_query("vpn", v, ALICE, 10, NO_FILTERS, version=V3_0, pagination_depth=150)
    assert set(body["query"]) == {"hybrid"}  # top level, no wrapper
    hybrid = body["query"]["hybrid"]
    assert hybrid["filter"] == q.access_filter(ALICE, NO_FILTERS)
    assert isinstance(hybrid["filter"], dict)  # one query object, not an array
    assert hybrid["pagination_depth"] == 150
    lexical, knn = hybrid["queries"]
    assert lexical == {"match": {"chunk_text": {"query": "vpn"}}}
    assert knn["knn"]["embedding"]["k"] == 150
    assert "filter" not in knn["knn"]["embedding"]
    assert body["size"] == 10
    assert "post_filter" not in keys_anywhere(body)
    assert len(hybrid["queries"]) <= 5


def test_hybrid_query_on_2_19_repeats_the_filter_in_each_subquery():
    v = unit(np.random.default_rng(0))
    filters = SearchFilters(doc_types=frozenset({"pdf"}))
    body = q.hybrid_query("vpn", v, ALICE, 10, filters, version=V2_19, pagination_depth=100)
    hybrid = body["query"]["hybrid"]
    access = q.access_filter(ALICE, filters)
    assert "filter" not in hybrid
    assert hybrid["pagination_depth"] == 100
    lexical, knn = hybrid["queries"]
    assert lexical == {
        "bool": {"must": [{"match": {"chunk_text": {"query": "vpn"}}}], "filter": [access]}
    }
    assert knn["knn"]["embedding"]["filter"] == access
    assert knn["knn"]["embedding"]["k"] == 100
    assert "post_filter" not in keys_anywhere(body)


def test_hybrid_query_depth_and_version_limits():
    v = unit(np.random.default_rng(0))
    deep = q.hybrid_query("x", v, ALICE, 300, NO_FILTERS, version=V3_0, pagination_depth=100)
    assert deep["query"]["hybrid"]["pagination_depth"] == 300  # never shallower than size
    with pytest.raises(ValueError, match=r"2\.19"):
        q.hybrid_query("x", v, ALICE, 10, NO_FILTERS, version=(2, 17))
    assert q.supports_hybrid_filter((3, 0)) and not q.supports_hybrid_filter((2, 19))


# ---------------------------------------------------------------- pipelines


def test_normalization_pipeline_shape():
    body = q.pipeline_body("normalization", version=V2_19, dense_weight=0.7)
    assert body["phase_results_processors"] == [
        {
            "normalization-processor": {
                "normalization": {"technique": "min_max"},
                "combination": {
                    "technique": "arithmetic_mean",
                    "parameters": {"weights": [0.3, 0.7]},  # lexical, dense: subquery order
                },
            }
        }
    ]
    for w in (0.0, 0.1, 0.33, 0.5, 1.0):
        weights = q.normalization_pipeline(w)["phase_results_processors"][0][
            "normalization-processor"
        ]["combination"]["parameters"]["weights"]
        assert sum(weights) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="dense_weight"):
        q.normalization_pipeline(1.5)


def test_rrf_pipeline_by_version():
    on3 = q.pipeline_body("rrf", version=(3, 1), dense_weight=0.6, rrf_k=40)
    assert on3["phase_results_processors"] == [
        {
            "score-ranker-processor": {
                "combination": {
                    "technique": "rrf",
                    "rank_constant": 40,
                    "parameters": {"weights": [0.4, 0.6]},
                }
            }
        }
    ]
    on219 = q.pipeline_body("rrf", version=V2_19, rrf_k=60)
    combination = on219["phase_results_processors"][0]["score-ranker-processor"]["combination"]
    assert combination == {"technique": "rrf", "rank_constant": 60}  # weights need 3.1
    with pytest.raises(ValueError, match=r"3\.1"):
        q.pipeline_body("rrf", version=V2_19, dense_weight=0.7)
    with pytest.raises(ValueError, match="rank_constant"):
        q.rrf_pipeline(0)


def test_pipeline_names_differ_per_configuration():
    names = {
        q.pipeline_name("trove", c, w, k)
        for c, w, k in itertools.product(("normalization", "rrf"), (0.3, 0.5), (60,))
    }
    assert len(names) == 4
    assert q.pipeline_name("trove", "normalization", 0.5, 60) == "trove-hybrid-minmax-d050"
    with pytest.raises(ValueError, match="combination"):
        q.pipeline_name("trove", "sum", 0.5, 60)  # type: ignore[arg-type]


# ---------------------------------------------------------------- writes and reads


def test_delete_and_stale_chunk_queries():
    assert q.docs_query(["d1", "d2"]) == {
        "query": {"bool": {"filter": [{"terms": {"doc_id": ["d1", "d2"]}}]}}
    }
    assert q.stale_chunks_query(["d1"], ["d1#0", "d1#1"]) == {
        "query": {
            "bool": {
                "filter": [{"terms": {"doc_id": ["d1"]}}],
                "must_not": [{"terms": {"chunk_id": ["d1#0", "d1#1"]}}],
            }
        }
    }
    assert q.terms_batches(["b", "a", "c", "a"], 2) == [["a", "b"], ["c"]]
    with pytest.raises(ValueError):
        q.terms_batches(["a"], q.MAX_TERMS + 1)


def test_os_ids_are_safe_and_deterministic():
    assert os_id("wiki:eng/VPN setup.md#3") == "wiki:eng/VPN setup.md#3"
    long_id = "src:" + "é" * 400 + "#1"  # 806 bytes
    hashed = os_id(long_id)
    assert hashed == os_id(long_id) and hashed.startswith(HASHED_ID_PREFIX)
    assert len(hashed.encode()) <= MAX_ID_BYTES
    assert os_id(long_id + "x") != hashed
    # A chunk id that looks like a hashed one is hashed too: no collision possible.
    assert os_id(hashed) != hashed
    assert os_id("tab\there").startswith(HASHED_ID_PREFIX)
    exact = "a" * MAX_ID_BYTES
    assert os_id(exact) == exact and os_id(exact + "a") != exact + "a"
    with pytest.raises(ValueError):
        os_id("")


def test_source_round_trip_and_null_tenant():
    r = record("wiki:a/b.md", 2, "text", Acl(allow_groups=frozenset({"eng"})), rng=None)
    src = to_source(r)
    assert src["tenant_id"] is None and src["acl_public"] is False
    assert src["acl_allow_groups"] == ["eng"]
    assert len(src["embedding"]) == DIM
    back = from_source(src)
    assert back == r
    np.testing.assert_allclose(back.vector, r.vector, rtol=1e-6)
    naive = record("d", 0, "x", Acl.public_acl(), modified_at=datetime(2024, 1, 1, 12))
    assert to_source(naive)["modified_at"] == "2024-01-01T12:00:00+00:00"
