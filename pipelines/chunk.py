"""Structure-aware chunking, bounded by the embedding model's own tokenizer.

A chunk is a span of the parsed text: ``chunk.text == parsed.text[start:end]``,
so a citation can always be checked against the source. Chunks follow the
document's headings and stay within two budgets, both counted with the
:class:`~retrieval.embedding.tokens.TokenCounter` (use
:class:`~retrieval.embedding.tokens.HFTokenCounter`
over ``Embedder.tokenizer`` in production):

* ``count(chunk.text) <= max_tokens``, and
* ``count(chunk.embedding_text) <= max_seq_length``, where ``embedding_text``
  is the context line (document title and section path) plus the text, so the
  model never silently truncates what it embeds.

Rules, in the order they apply:

1. **Heading levels.** ``Title`` elements form a heading stack. A title with a
   known ``heading_level`` pops every heading at that level or deeper and is
   pushed. A title whose level is unknown (``None``) is placed one level below
   the deepest heading *of known level* on the stack (level 1 when there is
   none): consecutive unknown-level titles are therefore siblings, a document
   with no levels at all gets a flat list of sections, and unknown-level titles
   never nest ever deeper.
2. **Section.** A chunk's ``section`` is the heading path (outermost first) in
   force at its first content element. Headings that open a chunk are part of
   that path, so ``# Travel`` / ``## Per diem`` / text gives
   ``("Travel", "Per diem")``.
3. **Breaks.** A heading at or above the level of the chunk's section (any
   heading, if the chunk has content but no section) starts a new chunk; a
   deeper heading may join the current chunk. A chunk that so far holds only
   headings never breaks on a heading, so headings stay with their content.
4. **Packing.** Consecutive elements join the current chunk while both budgets
   hold. When one does not fit, the chunk is closed and any headings at its end
   move to the next chunk: a heading is never the last element of a chunk that
   content follows (unless the headings alone take more than half the budget).
5. **Long elements** are cut with ``counter.split`` into pieces that each fit;
   the first piece also fits after any headings carried into its chunk.
6. **Tiny chunks** (``< min_tokens``) join the previous chunk when it has the
   same section and the result still fits.
7. **Passages outside any heading** (before the first heading, or in a
   document with none: a table, a plain essay) take the document title as
   their section, since the title is the outermost heading of any document.
   Every chunk of a titled document so has a section to cite. The context
   line is unaffected (it already starts with the title).

The context line is ``"<title> > <section> > ... > <section>"``, at most
:data:`CONTEXT_MAX_TOKENS` tokens (less for small ``max_seq_length``). A first
section equal to the title is not repeated. Too long a path loses its outer
sections first (shown as ``…``), keeping the title and the innermost section;
past that it is cut at the token cap.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

from core.errors import TroveError
from pipelines.models import Chunk, ParsedDocument, chunk_id_for
from retrieval.embedding.tokens import HFTokenCounter, TokenCounter, TokenizerError

CONTEXT_MAX_TOKENS = 48
CONTEXT_SEPARATOR = " > "
CONTEXT_GAP = "\n\n"  # between the context line and the text in ``Chunk.embedding_text``
ELISION = "…"
TITLE_CATEGORY = "Title"


class ChunkingError(TroveError, ValueError):
    """A document cannot be chunked as asked; the message says which value is wrong."""


@dataclass(frozen=True)
class _Unit:
    """An element, or a piece of a long one, with the heading path in force at it."""

    start: int
    end: int
    page: int | None
    section: tuple[str, ...]
    levels: tuple[int, ...]  # heading level of each section entry
    heading_level: int | None = None  # effective level when this unit is a heading

    @property
    def is_heading(self) -> bool:
        return self.heading_level is not None


def _normalise_heading(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _units(parsed: ParsedDocument) -> Iterator[_Unit]:
    """Walk the elements, tracking the heading stack (rule 1)."""
    stack: list[tuple[str, int, bool]] = []  # (heading, level, level was known)
    previous_end = 0
    for i, element in enumerate(parsed.elements):
        if (
            element.char_start < previous_end
            or element.char_end < element.char_start
            or parsed.text[element.char_start : element.char_end] != element.text
        ):
            raise ChunkingError(
                f"{parsed.doc_id}: element {i} ({element.category}) has span "
                f"[{element.char_start}, {element.char_end}) that does not match its text "
                f"or overlaps the previous element (which ended at {previous_end})"
            )
        previous_end = element.char_end
        start, end = _trim(parsed.text, element.char_start, element.char_end)
        if start == end:
            continue
        level: int | None = None
        if element.category == TITLE_CATEGORY:
            if element.heading_level is not None:
                if element.heading_level < 1:
                    raise ChunkingError(
                        f"{parsed.doc_id}: element {i} has heading_level "
                        f"{element.heading_level}; levels start at 1"
                    )
                level = element.heading_level
            else:
                known = [lvl for _, lvl, was_known in stack if was_known]
                level = (known[-1] if known else 0) + 1
            while stack and stack[-1][1] >= level:
                stack.pop()
            stack.append(
                (_normalise_heading(element.text), level, element.heading_level is not None)
            )
        yield _Unit(
            start=start,
            end=end,
            page=element.page,
            section=tuple(h for h, _, _ in stack),
            levels=tuple(lvl for _, lvl, _ in stack),
            heading_level=level,
        )


def _first_content(units: list[_Unit]) -> _Unit | None:
    return next((u for u in units if not u.is_heading), None)


def _section_of(units: list[_Unit]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Rule 2: the path at the first content unit, else after the last heading."""
    anchor = _first_content(units) or units[-1]
    return anchor.section, anchor.levels


class _Chunker:
    def __init__(
        self,
        parsed: ParsedDocument,
        counter: TokenCounter,
        max_tokens: int,
        max_seq_length: int,
        min_tokens: int,
        overhead: int,
    ) -> None:
        self.parsed = parsed
        self.counter = counter
        self.max_tokens = max_tokens
        self.max_seq_length = max_seq_length
        self.min_tokens = min_tokens
        self.context_cap = min(CONTEXT_MAX_TOKENS, max_seq_length // 4)
        self.title = _normalise_heading(parsed.title)
        self._contexts: dict[tuple[str, ...], str] = {}
        # Counting is the chunker's main cost, and packing, merging and the final
        # chunks ask for the same strings again: remember them for this document.
        self._counts: dict[str, int] = {}
        # With a counter whose counts add up across whitespace (HFTokenCounter over
        # BERT's WordPiece), a span costs the sum of its units' counts, each unit
        # encoded once, instead of a fresh encode of every growing candidate span.
        # The sums are exact, so the chunks are the same either way.
        separates = getattr(counter, "separates", None)
        self._separates = separates if callable(separates) else None
        self._overhead = overhead
        self._unit_counts: dict[tuple[int, int], int] = {}
        self._context_separates = self._separates is not None and self._separates(CONTEXT_GAP)
        self.drafts: list[list[_Unit]] = []
        self.current: list[_Unit] = []

    # -- budgets ---------------------------------------------------------------

    def count_units(self, units: list[_Unit]) -> None:
        """Count every unit's text in one call, when the counter can (``count_many``):
        packing asks for each of them, one at a time, otherwise."""
        count_many = getattr(self.counter, "count_many", None)
        if not callable(count_many):
            return
        text = self.parsed.text
        todo = [
            t for t in dict.fromkeys(text[u.start : u.end] for u in units) if t not in self._counts
        ]
        self._counts.update(zip(todo, count_many(todo), strict=True))

    def count(self, text: str) -> int:
        n = self._counts.get(text)
        if n is None:
            n = self._counts[text] = self.counter.count(text)
        return n

    def span_text(self, units: list[_Unit]) -> str:
        return self.parsed.text[units[0].start : units[-1].end]

    def _unit_count(self, unit: _Unit) -> int:
        key = (unit.start, unit.end)
        n = self._unit_counts.get(key)
        if n is None:
            n = self._unit_counts[key] = self.count(self.parsed.text[unit.start : unit.end])
        return n

    def span_count(self, units: list[_Unit]) -> int:
        """``count(span_text(units))``: summed over the units when every gap separates."""
        separates = self._separates
        if separates is not None:
            text = self.parsed.text
            total = self._unit_count(units[0])
            for previous, unit in pairwise(units):
                if not separates(text[previous.end : unit.start]):
                    break
                total += self._unit_count(unit) - self._overhead
            else:
                return total
        return self.count(self.span_text(units))

    def embedded_count(self, context: str, units: list[_Unit]) -> int:
        """``count(context + CONTEXT_GAP + span_text(units))``, the model's input."""
        if self._context_separates:
            return self.count(context) + self.span_count(units) - self._overhead
        return self.count(f"{context}{CONTEXT_GAP}{self.span_text(units)}")

    def context(self, section: tuple[str, ...]) -> str:
        if section not in self._contexts:
            self._contexts[section] = self._build_context(section)
        return self._contexts[section]

    def _build_context(self, section: tuple[str, ...]) -> str:
        sections = list(section)
        if sections and self.title and sections[0].casefold() == self.title.casefold():
            sections = sections[1:]
        head = [self.title] if self.title else []
        candidates = [head + sections]
        # Drop outer sections first: the title says which document, the
        # innermost section what the passage is about.
        for k in range(1, len(sections)):
            candidates.append([*head, ELISION, *sections[k:]])
        for parts in candidates:
            context = CONTEXT_SEPARATOR.join(parts)
            if self.counter.count(context) <= self.context_cap:
                return context
        context = CONTEXT_SEPARATOR.join(candidates[-1])
        pieces = self.counter.split(context, self.context_cap)
        return context[pieces[0][0] : pieces[0][1]] if pieces else ""

    def overflow(self, units: list[_Unit]) -> int:
        """Tokens over the tighter budget (<= 0 when ``units`` fit in one chunk)."""
        over = self.span_count(units) - self.max_tokens
        context = self.context(_section_of(units)[0])
        if context:
            embedded = self.embedded_count(context, units)
            over = max(over, embedded - self.max_seq_length)
        return over

    def fits(self, units: list[_Unit]) -> bool:
        if self.span_count(units) > self.max_tokens:  # the usual failure: skip the second count
            return False
        context = self.context(_section_of(units)[0])
        return not context or self.embedded_count(context, units) <= self.max_seq_length

    # -- packing ---------------------------------------------------------------

    def add(self, unit: _Unit) -> None:
        if unit.is_heading and _first_content(self.current) is not None and self._breaks(unit):
            self.flush()
        if self.fits([*self.current, unit]):
            self.current.append(unit)
            return
        if _first_content(self.current) is not None:
            carried: list[_Unit] = []
            while self.current and self.current[-1].is_heading:
                carried.insert(0, self.current.pop())
            self.flush()
            self.current = carried
            if self.fits([*self.current, unit]):
                self.current.append(unit)
                return
        self._add_long(unit)

    def _breaks(self, heading: _Unit) -> bool:
        """Rule 3: does ``heading`` end the current chunk's section?"""
        _, levels = _section_of(self.current)
        level = heading.heading_level
        return not levels or (level is not None and level <= levels[-1])

    def _add_long(self, unit: _Unit) -> None:
        """``unit`` does not fit after the headings in ``current`` (maybe none): cut it."""
        pieces = self._split_to_fit(self.current, unit)
        if pieces is None and self.current:
            # The headings leave too little room: they become a chunk of their own.
            self.flush()
            pieces = self._split_to_fit([], unit)
        if pieces is None:
            raise ChunkingError(
                f"{self.parsed.doc_id}: cannot fit text at [{unit.start}, {unit.end}) into "
                f"max_tokens={self.max_tokens}, max_seq_length={self.max_seq_length} "
                f"next to its context {self.context(unit.section)!r}"
            )
        self.current.append(pieces[0])
        for piece in pieces[1:]:
            self.add(piece)

    def _split_to_fit(self, prefix: list[_Unit], unit: _Unit) -> list[_Unit] | None:
        """Pieces of ``unit``: the first fits after ``prefix``, each later one alone.

        Tries ever smaller budgets, cut by the tighter of the two budgets' overflow.
        Gives up (``None``) when a non-empty prefix would need pieces under half
        the budget, or no budget works at all.
        """
        text = self.parsed.text[unit.start : unit.end]
        budget = self.max_tokens
        floor = self.max_tokens // 2 if prefix else 1
        while budget >= max(floor, 1):
            try:
                spans = self.counter.split(text, budget)
            except TokenizerError:
                return None
            if not spans:
                return None
            pieces = [
                _Unit(unit.start + s, unit.start + e, unit.page, unit.section, unit.levels)
                for s, e in spans
            ]
            overs = [self.overflow([*prefix, pieces[0]])]
            overs += [self.overflow([p]) for p in pieces[1:]]
            worst = max(overs)
            if worst <= 0:
                return pieces
            budget -= worst
        return None

    def flush(self) -> None:
        if self.current:
            self.drafts.append(self.current)
        self.current = []

    # -- finishing -------------------------------------------------------------

    def merge_tiny(self) -> None:
        """Rule 6: fold chunks under ``min_tokens`` into the previous one of their section."""
        merged: list[list[_Unit]] = []
        for draft in self.drafts:
            if (
                merged
                and self.span_count(draft) < self.min_tokens
                and self.cited_section(draft) == self.cited_section(merged[-1])
                and self.fits([*merged[-1], *draft])
            ):
                merged[-1] = [*merged[-1], *draft]
            else:
                merged.append(draft)
        self.drafts = merged

    def cited_section(self, units: list[_Unit]) -> tuple[str, ...]:
        """Rule 7: the heading path, or the document title outside any heading."""
        section = _section_of(units)[0]
        title = self.parsed.title.strip()
        return section if section or not title else (title,)

    def chunks(self) -> list[Chunk]:
        out = []
        for ord_, units in enumerate(self.drafts):
            section = _section_of(units)[0]
            text = self.span_text(units)
            out.append(
                Chunk(
                    chunk_id=chunk_id_for(self.parsed.doc_id, ord_),
                    doc_id=self.parsed.doc_id,
                    ord=ord_,
                    text=text,
                    char_start=units[0].start,
                    char_end=units[-1].end,
                    section=self.cited_section(units),
                    pages=tuple(sorted({u.page for u in units if u.page is not None})),
                    token_count=self.span_count(units),
                    context=self.context(section),
                )
            )
        return out


def chunk_document(
    parsed: ParsedDocument,
    counter: TokenCounter,
    *,
    max_tokens: int = 200,
    max_seq_length: int = 256,
    min_tokens: int = 24,
) -> list[Chunk]:
    """Cut ``parsed`` into citable, token-bounded chunks (see the module docstring).

    Example::

        counter = HFTokenCounter(get_embedder().tokenizer)
        chunks = chunk_document(parsed, counter, max_tokens=200, max_seq_length=256)

    :param counter: token counter of the embedding model (counts include the
        model's special tokens).
    :param max_tokens: budget for ``chunk.text``.
    :param max_seq_length: budget for ``chunk.embedding_text`` (the model's window).
    :param min_tokens: chunks smaller than this join the previous chunk of their
        section when that fits.
    :returns: chunks in document order, ``ord`` 0..n-1; empty for a document
        with no text. The same input always gives the same chunks.
    :raises ChunkingError: for an impossible budget or an element whose span
        does not match ``parsed.text``.
    """
    overhead = counter.count("")
    if max_tokens <= overhead:
        raise ChunkingError(
            f"max_tokens must exceed the {overhead} tokens the model adds to every input, "
            f"got {max_tokens}"
        )
    if max_seq_length <= overhead:
        raise ChunkingError(
            f"max_seq_length must exceed the {overhead} tokens the model adds to every input, "
            f"got {max_seq_length}"
        )
    if min_tokens < 0:
        raise ChunkingError(f"min_tokens must be >= 0, got {min_tokens}")
    chunker = _Chunker(parsed, counter, max_tokens, max_seq_length, min_tokens, overhead)
    units = list(_units(parsed))
    chunker.count_units(units)
    for unit in units:
        chunker.add(unit)
    chunker.flush()
    chunker.merge_tiny()
    return chunker.chunks()


__all__ = [
    "CONTEXT_MAX_TOKENS",
    "ChunkingError",
    "HFTokenCounter",
    "TokenCounter",
    "chunk_document",
]
