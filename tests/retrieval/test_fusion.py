"""Fusion functions: RRF and min-max blend, by hand-computed values."""

from __future__ import annotations

import pytest

from retrieval.fusion import FusionMethod, fuse, reciprocal_rank_fusion, score_blend
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
