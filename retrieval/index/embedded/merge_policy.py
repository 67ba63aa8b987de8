"""When to merge segments: a small tiered policy, as a pure function.

Every batch writes one segment, so without merging a long-running index
collects thousands of tiny ones and every query pays per-segment overhead.
Segments are put in size tiers (factor 4 above 1,024 live rows); when a tier
holds ``MERGE_FACTOR`` segments they merge into one of the next tier, so each
row is rewritten O(log n) times. A segment with more than half of its rows
deleted is rewritten with its tier to reclaim space, and a hard cap bounds the
segment count whatever the sizes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from retrieval.index.embedded.manifest import SegmentEntry

MERGE_FACTOR = 4
TIER_BASE_ROWS = 1024
MAX_SEGMENTS = 16


def tier(live_rows: int) -> int:
    if live_rows < TIER_BASE_ROWS:
        return 0
    return int(math.log(live_rows / TIER_BASE_ROWS, MERGE_FACTOR)) + 1


def plan_merge(entries: Sequence[SegmentEntry]) -> list[str]:
    """Ids of the segments to merge into one now (empty: no merge needed)."""
    by_tier: dict[int, list[SegmentEntry]] = defaultdict(list)
    for e in entries:
        by_tier[tier(e.live)].append(e)
    for t in sorted(by_tier):
        group = by_tier[t]
        mostly_deleted = [e for e in group if e.live * 2 < e.rows]
        if len(group) >= MERGE_FACTOR or mostly_deleted:
            return [e.id for e in (group if len(group) >= MERGE_FACTOR else mostly_deleted)]
    if len(entries) > MAX_SEGMENTS:
        smallest = sorted(entries, key=lambda e: e.live)[: len(entries) - MAX_SEGMENTS + 1]
        return [e.id for e in smallest]
    return []
