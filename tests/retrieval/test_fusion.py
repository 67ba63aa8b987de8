"""Fusion functions: RRF and min-max blend, by hand-computed values."""

from __future__ import annotations

import pytest

from retrieval.fusion import (
    FusionMethod,
    fuse,
    fuse_by_document,
    reciprocal_rank_fusion,
    score_blend,
)
from retrieval.models import ScoredId


def ranking(*ids: str) -> list[ScoredId]:
    return [ScoredId(cid, 10.0 - i) for i, cid in enumerate(ids)]


def test_rrf_scores_by_weighted_reciprocal_rank():
    fused = reciprocal_rank_fusion([ranking("a", "b"), ranking("b", "c")], [1.0, 2.0], k=60)
    scores = {h.chunk_id: h.score for h in fused}
    assert scores == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 2 / 61, "c": 2 / 62})
    assert [h.chunk_id for h in fused] == ["b", "c", "a"]


def test_rrf_ties_keep_first_seen_order_and_repeats_count_once():
    fused = reciprocal_rank_fusion([ranking("x", "x", "y"), ranking("y", "x")])
    assert [h.chunk_id for h in fused] == ["x", "y"]
    assert fused[0].score == pytest.approx(fused[1].score)


def test_blend_min_max_normalises_each_list():
    lexical = [ScoredId("a", 12.0), ScoredId("b", 7.0), ScoredId("c", 2.0)]
    dense = [ScoredId("c", 0.9), ScoredId("a", 0.5)]
    fused = {h.chunk_id: h.score for h in score_blend([lexical, dense], [0.5, 0.5])}
    assert fused == pytest.approx({"a": 0.5 * 1.0 + 0.0, "b": 0.5 * 0.5, "c": 0.0 + 0.5 * 1.0})


def test_blend_of_a_flat_list_gives_full_weight():
    fused = score_blend([[ScoredId("a", 3.0), ScoredId("b", 3.0)]], [0.7])
    assert [h.score for h in fused] == pytest.approx([0.7, 0.7])


def test_fusion_method_from_str_lists_valid_values():
    assert FusionMethod.from_str(" RRF ") is FusionMethod.RRF
    with pytest.raises(ValueError, match="valid: rrf, blend"):
        FusionMethod.from_str("borda")


def test_fuse_dispatches_and_validates():
    rankings = [ranking("a", "b"), ranking("b")]
    assert fuse("rrf", rankings) == reciprocal_rank_fusion(rankings)
    assert fuse(FusionMethod.BLEND, rankings) == score_blend(rankings)
    with pytest.raises(ValueError, match="2 weights given for 1"):
        fuse("rrf", [ranking("a")], [0.5, 0.5])
    with pytest.raises(ValueError, match="rrf k"):
        reciprocal_rank_fusion(rankings, k=0)


def test_zscore_standardises_each_list_and_missing_ids_get_the_list_floor():
    from retrieval.fusion import zscore_blend

    lexical = [ScoredId("a", 9.0), ScoredId("b", 6.0), ScoredId("c", 3.0)]  # mean 6, std sqrt(6)
    dense = [ScoredId("c", 0.8), ScoredId("d", 0.4)]  # mean 0.6, std 0.2
    fused = zscore_blend([lexical, dense], [0.4, 0.6])
    s = 6**0.5
    expected = {
        "a": 0.4 * 3 / s + 0.6 * -1.0,  # missing from dense: dense's lowest z (-1)
        "b": 0.4 * 0.0 + 0.6 * -1.0,
        "c": 0.4 * -3 / s + 0.6 * 1.0,
        "d": 0.4 * -3 / s + 0.6 * -1.0,  # missing from lexical: lexical's lowest z
    }
    assert {h.chunk_id: h.score for h in fused} == pytest.approx(expected)
    assert [h.chunk_id for h in fused] == ["c", "a", "b", "d"]


def test_zscore_does_not_depend_on_the_scale_of_a_list():
    lexical = [ScoredId("a", 30.0), ScoredId("b", 20.0), ScoredId("c", 10.0)]
    dense = [ScoredId("c", 0.9), ScoredId("b", 0.85), ScoredId("a", 0.1)]
    scaled = [ScoredId(h.chunk_id, h.score * 1000 + 7) for h in lexical]
    once = fuse("zscore", [lexical, dense], [0.5, 0.5])
    again = fuse(FusionMethod.ZSCORE, [scaled, dense], [0.5, 0.5])
    assert [h.chunk_id for h in once] == [h.chunk_id for h in again]
    assert [h.score for h in once] == pytest.approx([h.score for h in again])


def test_zscore_flat_list_adds_nothing_and_repeats_keep_the_best_score():
    flat = [ScoredId("a", 2.0), ScoredId("b", 2.0)]
    dense = [ScoredId("b", 0.9), ScoredId("a", 0.1), ScoredId("b", 0.0)]
    fused = fuse("zscore", [flat, dense], [0.5, 0.5])
    assert [h.chunk_id for h in fused] == ["b", "a"]
    assert fused[0].score == pytest.approx(0.5 * 1.0) and fused[1].score == pytest.approx(-0.5)
    assert fuse("zscore", [[], []]) == []


def _document(chunk_id: str) -> str:
    return chunk_id.split("#")[0]


@pytest.mark.parametrize("method", list(FusionMethod))
def test_document_fusion_of_single_passage_documents_is_passage_fusion(method):
    lexical = [ScoredId("a#0", 9.0), ScoredId("b#0", 4.0), ScoredId("c#0", 1.0)]
    dense = [ScoredId("c#0", 0.8), ScoredId("d#0", 0.6), ScoredId("a#0", 0.1)]
    passages = fuse(method, [lexical, dense], [0.4, 0.6])
    documents = fuse_by_document(method, [lexical, dense], [0.4, 0.6], _document)
    assert [(h.chunk_id, h.score) for h in documents] == [(h.chunk_id, h.score) for h in passages]


@pytest.mark.parametrize("method", list(FusionMethod))
def test_a_document_found_by_different_passages_in_each_list_ranks_first(method):
    # Document "a" is top in both lists, but through different passages; "b" has one
    # passage second in both. Passage by passage, "b#0" wins (it alone is in both lists).
    lexical = [ScoredId("a#0", 10.0), ScoredId("b#0", 9.0), ScoredId("c#0", 1.0)]
    dense = [ScoredId("a#3", 0.90), ScoredId("b#0", 0.85), ScoredId("d#0", 0.2)]
    passages = fuse(method, [lexical, dense], [0.5, 0.5])
    assert passages[0].chunk_id == "b#0"
    documents = fuse_by_document(method, [lexical, dense], [0.5, 0.5], _document)
    order = [h.chunk_id for h in documents]
    assert order[:3] == ["a#0", "a#3", "b#0"]  # a's passages keep their own order
    by_id = {h.chunk_id: h.score for h in documents}
    fused = {h.chunk_id: h.score for h in passages}
    # Both of a's passages are lifted by the same amount; b and the others are not.
    lift = by_id["a#0"] - fused["a#0"]
    assert lift > 0 and by_id["a#3"] - fused["a#3"] == pytest.approx(lift)
    assert all(by_id[c] == fused[c] for c in ("b#0", "c#0", "d#0"))


def test_document_fusion_scores_the_document_by_its_best_passage_per_list():
    lexical = [ScoredId("a#0", 3.0), ScoredId("a#1", 2.0), ScoredId("b#0", 1.0)]
    dense = [ScoredId("a#1", 0.5), ScoredId("b#0", 0.4)]
    documents = fuse_by_document("rrf", [lexical, dense], None, _document, rrf_k=60)
    scores = {h.chunk_id: h.score for h in documents}
    # a: rank 1 lexical (a#0) + rank 1 dense (a#1); its best passage a#1 alone: 1/62 + 1/61.
    assert scores["a#1"] == pytest.approx(1 / 61 + 1 / 61)
    assert scores["a#0"] == pytest.approx(1 / 61 + (1 / 61 + 1 / 61) - (1 / 62 + 1 / 61))
    assert scores["b#0"] == pytest.approx(1 / 63 + 1 / 62)
    # A lift, not a grouping: a#0 is weak on its own and stays below b's passage.
    assert [h.chunk_id for h in documents] == ["a#1", "b#0", "a#0"]
