"""Data passed between ingestion stages."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ParsedElement:
    """One structural element of a parsed document.

    ``char_start``/``char_end`` index into :attr:`ParsedDocument.text`, so
    ``doc.text[e.char_start:e.char_end] == e.text``.
    """

    category: str  # unstructured's category: Title, NarrativeText, ListItem, Table, ...
    text: str
    char_start: int
    char_end: int
    page: int | None = None
    heading_level: int | None = None  # for titles: 1 is the top level; None if unknown


@dataclass(frozen=True)
class ParsedDocument:
    doc_id: str
    version: str
    title: str
    text: str  # the element texts joined by ELEMENT_SEPARATOR
    elements: tuple[ParsedElement, ...]
    # OCR (pipelines.ocr): pages read by OCR, and scanned pages left out because
    # OCR is off or tesseract is missing; how long OCR took (not part of equality).
    ocr_pages: int = 0
    ocr_pages_skipped: int = 0
    ocr_seconds: float = field(default=0.0, compare=False)

    @property
    def has_pages(self) -> bool:
        return any(e.page is not None for e in self.elements)


ELEMENT_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Chunk:
    """A passage of a parsed document, bounded by the embedding model's tokenizer.

    ``text == parsed.text[char_start:char_end]`` always holds: that is what makes
    a citation checkable. ``context`` (title and section path) is prepended only
    for embedding, never to the text.
    """

    chunk_id: str  # f"{doc_id}#{ord}"
    doc_id: str
    ord: int
    text: str
    char_start: int
    char_end: int
    section: tuple[str, ...] = field(default_factory=tuple)
    pages: tuple[int, ...] = field(default_factory=tuple)
    token_count: int = 0
    context: str = ""

    @property
    def embedding_text(self) -> str:
        return f"{self.context}\n\n{self.text}" if self.context else self.text


def chunk_id_for(doc_id: str, ord_: int) -> str:
    return f"{doc_id}#{ord_}"
