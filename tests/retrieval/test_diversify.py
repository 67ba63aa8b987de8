"""Merging adjacent chunks into one passage with a combined citation; the per-document cap."""

from __future__ import annotations

import pytest

from retrieval.diversify import (
    RankedPassage,
    cap_per_document,
    combine,
    diversify,
    merge_adjacent,
)
from retrieval.models import Citation, Passage


def item(doc: str, ord_: int, score: float, *, pages=(), version="v1") -> RankedPassage:
    text = f"{doc} chunk {ord_}"
    start = ord_ * 100
    cite = Citation(
        doc,
        f"T {doc}",
        f"file:///{doc}",
        f"{doc}.md",
        ("H", f"S{ord_}"),
        pages,
        start,
        start + len(text),
        version,
    )
    passage = Passage(f"{doc}#{ord_}", doc, "src", text, score, cite)
    return RankedPassage(
        passage,
        score,
        score / 2,
        ord_,
        ord_,
        (f"{doc}#{ord_}",),
        "md",
        ({"type": "prompt_injection", "score": 0.1 * ord_},) if ord_ == 2 else (),
    )


def ids(items):
    return [list(i.chunk_ids) for i in items]


def test_adjacent_chunks_merge_in_document_order_at_the_best_rank():
    ranked = [item("a", 2, 0.9, pages=(3,)), item("b", 0, 0.8), item("a", 1, 0.7, pages=(2, 3))]
    merged, folded = merge_adjacent(ranked)
    assert folded == 1
    assert ids(merged) == [["a#1", "a#2"], ["b#0"]]
    a = merged[0]
    assert a.score == 0.9 and a.evidence == 0.45
    assert a.passage.text == "a chunk 1\n\na chunk 2"
    assert a.passage.chunk_id == "a#1"
    c = a.passage.citation
    assert (c.char_start, c.char_end) == (100, 200 + len("a chunk 2"))
    assert c.pages == (2, 3) and c.section == ("H", "S1")
    assert (a.first_ord, a.last_ord) == (1, 2)
    assert a.risk == ({"type": "prompt_injection", "score": pytest.approx(0.2)},)


def test_a_bridging_chunk_joins_two_groups():
    ranked = [item("a", 3, 0.9), item("a", 5, 0.8), item("a", 4, 0.7), item("a", 9, 0.6)]
    merged, folded = merge_adjacent(ranked)
    assert ids(merged) == [["a#3", "a#4", "a#5"], ["a#9"]]
    assert folded == 2


def test_non_adjacent_other_versions_and_size_limit():
    ranked = [
        item("a", 0, 0.9),
        item("a", 2, 0.8),
        item("b", 1, 0.7, version="v2"),
        item("b", 2, 0.6),
    ]
    merged, _ = merge_adjacent(ranked)
    assert ids(merged) == [["a#0"], ["a#2"], ["b#1"], ["b#2"]]  # b#1 is another version
    long = [item("c", i, 1.0 - i / 10) for i in range(6)]
    merged, _ = merge_adjacent(long, max_merged=4)
    assert ids(merged) == [["c#0", "c#1", "c#2", "c#3"], ["c#4", "c#5"]]


def test_cap_per_document_keeps_the_best():
    ranked = [item("a", 0, 0.9), item("a", 5, 0.8), item("b", 0, 0.7), item("a", 9, 0.6)]
    kept, dropped = cap_per_document(ranked, 2)
    assert ids(kept) == [["a#0"], ["a#5"], ["b#0"]] and dropped == 1
    with pytest.raises(ValueError):
        cap_per_document(ranked, 0)


def test_diversify_merges_then_caps():
    ranked = [item("a", 0, 0.9), item("a", 1, 0.85), item("a", 5, 0.8), item("a", 9, 0.7)]
    kept, stats = diversify(ranked, max_per_document=2, merge=True)
    assert ids(kept) == [["a#0", "a#1"], ["a#5"]]
    assert (stats.merged, stats.capped) == (1, 1)
    plain, stats = diversify(ranked, max_per_document=2, merge=False)
    assert ids(plain) == [["a#0"], ["a#1"]] and stats.merged == 0


def test_combine_refuses_non_adjacent_or_mixed():
    with pytest.raises(ValueError, match="not adjacent"):
        combine([item("a", 0, 1.0), item("a", 2, 0.5)])
    with pytest.raises(ValueError, match="different documents"):
        combine([item("a", 0, 1.0), item("b", 1, 0.5)])
