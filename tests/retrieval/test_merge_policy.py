"""The tiered merge policy, as a pure function."""

from __future__ import annotations

from retrieval.index.embedded.manifest import SegmentEntry
from retrieval.index.embedded.merge_policy import MAX_SEGMENTS, MERGE_FACTOR, plan_merge, tier


def seg(i: int, live: int, rows: int | None = None) -> SegmentEntry:
    return SegmentEntry(id=f"s{i}", rows=rows or live, live=live)


def test_tiers_grow_by_the_merge_factor():
    assert tier(10) == tier(1023) == 0
    assert tier(1024) == 1 and tier(1024 * MERGE_FACTOR) == 2


def test_a_full_tier_merges_and_small_mixed_sizes_do_not():
    assert plan_merge([seg(i, 100) for i in range(MERGE_FACTOR - 1)]) == []
    full = [seg(i, 100) for i in range(MERGE_FACTOR)] + [seg(9, 100_000)]
    assert plan_merge(full) == [f"s{i}" for i in range(MERGE_FACTOR)]


def test_mostly_deleted_segment_is_rewritten():
    assert plan_merge([seg(0, 100_000), seg(1, 2000, rows=5000)]) == ["s1"]


def test_segment_count_is_capped():
    sizes = [1024 * MERGE_FACTOR**t for t in range(MAX_SEGMENTS + 2) for _ in range(1)]
    entries = [seg(i, s) for i, s in enumerate(sizes)]
    assert len(plan_merge(entries)) == len(entries) - MAX_SEGMENTS + 1
