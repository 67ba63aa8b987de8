"""Diversity after reranking: adjacent chunks merged, at most N passages per document.

Two rules, applied in this order to the reranked list:

1. **Merge adjacent chunks.** Chunks of the same document with consecutive
   ``ord`` (and the same document version) become one passage: texts joined by
   a blank line in document order, one combined citation (span from the first
   chunk's start to the last one's end, the union of pages, the first chunk's
   section), the best member's scores, and every member's chunk id. The merged
   passage takes the rank of its best member. At most :data:`MAX_MERGED`
   chunks join one passage, so context stays bounded.
2. **Cap per document.** At most ``max_per_document`` passages of one document
   are kept (the best ones); the rest are dropped and counted.

Example::

    kept, stats = diversify(ranked, max_per_document=3, merge_adjacent=True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from retrieval.models import Citation, Passage

MAX_MERGED = 4


@dataclass(frozen=True)
class RankedPassage:
    """A passage in the final ordering, with where it sits in its document."""

    passage: Passage
    score: float  # what the ranking stage ordered by
    evidence: float  # the evidence score (see retrieval.rerank), for low_confidence
    first_ord: int
    last_ord: int
    chunk_ids: tuple[str, ...]
    doc_type: str = ""
    risk: tuple[dict, ...] = ()

    @property
    def doc_key(self) -> tuple[str, str]:
        return self.passage.doc_id, self.passage.citation.doc_version


@dataclass(frozen=True)
class DiversifyStats:
    merged: int = 0  # chunks folded into another passage
    capped: int = 0  # passages dropped by the per-document cap


def _adjacent(a: RankedPassage, b: RankedPassage) -> bool:
    return a.doc_key == b.doc_key and (
        a.last_ord + 1 == b.first_ord or b.last_ord + 1 == a.first_ord
    )


def combine(members: Sequence[RankedPassage]) -> RankedPassage:
    """One passage from adjacent members (any order); the best member leads the scores."""
    if not members:
        raise ValueError("combine needs at least one passage")
    if len(members) == 1:
        return members[0]
    in_doc = sorted(members, key=lambda m: m.first_ord)
    keys = {m.doc_key for m in members}
    if len(keys) != 1:
        raise ValueError(f"cannot combine passages of different documents: {sorted(keys)}")
    ords = [o for m in in_doc for o in range(m.first_ord, m.last_ord + 1)]
    if ords != list(range(in_doc[0].first_ord, in_doc[-1].last_ord + 1)):
        raise ValueError(f"passages are not adjacent: ords {ords}")
    best = max(members, key=lambda m: m.score)
    first = in_doc[0].passage
    pages = sorted({p for m in in_doc for p in m.passage.citation.pages})
    citation: Citation = replace(
        first.citation,
        pages=tuple(pages),
        char_start=min(m.passage.citation.char_start for m in in_doc),
        char_end=max(m.passage.citation.char_end for m in in_doc),
    )
    chunk_ids = tuple(cid for m in in_doc for cid in m.chunk_ids)
    passage = Passage(
        chunk_id=chunk_ids[0],
        doc_id=first.doc_id,
        source=first.source,
        text="\n\n".join(m.passage.text for m in in_doc),
        score=best.passage.score,
        citation=citation,
    )
    risk = tuple(r for m in in_doc for r in m.risk)
    return RankedPassage(
        passage=passage,
        score=best.score,
        evidence=max(m.evidence for m in members),
        first_ord=in_doc[0].first_ord,
        last_ord=in_doc[-1].last_ord,
        chunk_ids=chunk_ids,
        doc_type=first_doc_type(in_doc),
        risk=risk,
    )


def first_doc_type(members: Sequence[RankedPassage]) -> str:
    return next((m.doc_type for m in members if m.doc_type), "")


def merge_adjacent(
    ranked: Sequence[RankedPassage], max_merged: int = MAX_MERGED
) -> tuple[list[RankedPassage], int]:
    """Merge adjacent chunks; returns the merged list (in rank order) and how many folded in."""
    if max_merged < 1:
        raise ValueError(f"max_merged must be >= 1, got {max_merged}")
    groups: list[list[RankedPassage]] = []  # in order of each group's best (first) member
    # Only chunks of one document version can be adjacent: each item is compared with
    # its own document's groups (in the same order), not with every group.
    by_doc: dict[tuple[str, str], list[list[RankedPassage]]] = {}
    for item in ranked:
        same_doc = by_doc.setdefault(item.doc_key, [])
        home = None
        width = item.last_ord - item.first_ord + 1
        for group in same_doc:
            size = sum(m.last_ord - m.first_ord + 1 for m in group)
            if size + width <= max_merged and any(_adjacent(m, item) for m in group):
                home = group
                break
        if home is None:
            group = [item]
            groups.append(group)
            same_doc.append(group)
            continue
        home.append(item)
        _absorb_neighbours(groups, same_doc, home, max_merged)
    merged = [combine(g) for g in groups]
    return merged, len(ranked) - len(merged)


def _absorb_neighbours(
    groups: list[list[RankedPassage]],
    same_doc: list[list[RankedPassage]],
    home: list[RankedPassage],
    max_merged: int,
) -> None:
    # A chunk that bridges two groups (3 and 5, then 4) joins them into one.
    changed = True
    while changed:
        changed = False
        for other in same_doc:
            if other is home:
                continue
            size = sum(m.last_ord - m.first_ord + 1 for m in [*home, *other])
            if size <= max_merged and any(_adjacent(a, b) for a in home for b in other):
                # The later group joins the earlier (better-ranked) one.
                positions = {id(g): i for i, g in enumerate(groups)}
                first, second = sorted((home, other), key=lambda g: positions[id(g)])
                first.extend(second)
                del groups[positions[id(second)]]
                del same_doc[next(i for i, g in enumerate(same_doc) if g is second)]
                home = first
                changed = True
                break


def cap_per_document(
    ranked: Sequence[RankedPassage], max_per_document: int
) -> tuple[list[RankedPassage], int]:
    """Keep the best ``max_per_document`` passages of each document; count the dropped."""
    if max_per_document < 1:
        raise ValueError(f"max_per_document must be >= 1, got {max_per_document}")
    seen: dict[str, int] = {}
    kept = []
    for item in ranked:
        count = seen.get(item.passage.doc_id, 0)
        if count < max_per_document:
            kept.append(item)
        seen[item.passage.doc_id] = count + 1
    return kept, len(ranked) - len(kept)


def diversify(
    ranked: Sequence[RankedPassage],
    *,
    max_per_document: int,
    merge: bool = True,
    max_merged: int = MAX_MERGED,
) -> tuple[list[RankedPassage], DiversifyStats]:
    """Merge adjacent chunks (when ``merge``), then cap passages per document."""
    items = list(ranked)
    folded = 0
    if merge:
        items, folded = merge_adjacent(items, max_merged)
    items, capped = cap_per_document(items, max_per_document)
    return items, DiversifyStats(merged=folded, capped=capped)
