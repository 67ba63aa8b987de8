"""Every file of ../shared/corpora/formats through the real parser (unstructured's own samples).

Each file must give elements with page or section (heading) metadata, or a ParseError
with a reason. A few parse well but carry no such structure in the source itself (a
bare CSV, a DOCX that is only tables, HTML without heading tags); they are listed in
``NO_STRUCTURE_IN_SOURCE`` and must still parse.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipelines.errors import ParseError
from pipelines.models import ParsedDocument
from pipelines.parse import SUPPORTED_TYPES, parse_file

pytestmark = pytest.mark.corpus

Outcome = ParsedDocument | ParseError

KNOWN_GOOD = {
    "2023-half-year-analyses-by-segment.xlsx",
    "DA-1p.pdf",
    "README.md",
    "category-level.docx",
    "codeblock.md",
    "example-steelJIS-datasheet.html",
    "example-with-scripts.html",
    "fake-doc.rtf",
    "fake-email-attachment.eml",
    "fake-email-b64.eml",
    "fake-email.eml",
    "fake-email.msg",
    "fake-html-cp1252.html",
    "fake-memo.pdf",
    "fake-power-point-table.pptx",
    "fake-power-point.pptx",
    "fake-text-utf-16.txt",
    "fake-text.txt",
    "handbook-1p.docx",
    "korean-text-with-tables.pdf",
    "layout-parser-paper-fast.pdf",
    "mime-html-only.eml",
    "multi-column-2p.pdf",
    "norwich-city.txt",
    "page-breaks.docx",
    "reliance.pdf",
    "sample-presentation.pptx",
    "simple.odt",
    "single_table.pdf",  # a scanned page: read by OCR (tesseract, installed by make setup)
    "stanley-cups.xlsx",
}

# Parse fine, but the source has no pages and no headings to report.
NO_STRUCTURE_IN_SOURCE = {
    "LICENSE-unstructured-example-docs.md": "plain paragraphs, no Markdown headings",
    "docx-hdrftr.docx": "header, footer and one table; no heading styles, no page marks",
    "docx-tables.docx": "tables and captions in body style",
    "example-10k-1p.html": "headings are styled <p>/<td>, not <h1>-<h6>",
    "fake-doc-emphasized-text.docx": "a table and bold/italic body text",
    "hlink-meta.docx": "hyperlinked body paragraphs only",
    "ideas-page.html": "an essay laid out in one table",
    "simple-table.md": "a single Markdown table",
    "stanley-cups.csv": "a single table",
}

EXPECTED_FAILURES = {
    "empty.txt": "empty (0 bytes)",
    "fake-encrypted.eml": "encrypted",
}


@pytest.fixture(scope="module")
def outcomes(shared_corpora: Path) -> dict[str, Outcome]:
    folder = shared_corpora / "formats"
    results: dict[str, Outcome] = {}
    started = time.perf_counter()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            results[path.name] = parse_file(path, doc_id=f"formats:{path.name}", version="1")
        except ParseError as exc:
            results[path.name] = exc
    elapsed = time.perf_counter() - started
    print(f"\nparsed {len(results)} files in {elapsed:.1f}s ({elapsed / len(results):.2f}s/file)")
    return results


def has_structure(doc: ParsedDocument) -> bool:
    return doc.has_pages or any(
        e.category == "Title" or e.heading_level is not None for e in doc.elements
    )


def test_the_corpus_covers_the_lists(outcomes: dict[str, Outcome]) -> None:
    listed = KNOWN_GOOD | set(NO_STRUCTURE_IN_SOURCE) | set(EXPECTED_FAILURES)
    assert set(outcomes) <= listed, f"unlisted corpus files: {sorted(set(outcomes) - listed)}"
    assert len(outcomes) >= 40


def test_every_file_gives_structure_or_a_reason(outcomes: dict[str, Outcome]) -> None:
    for name, outcome in outcomes.items():
        if isinstance(outcome, ParseError):
            assert outcome.reason.strip(), name
            assert name in outcome.reason, f"{name}: the reason should name the file"
            continue
        assert outcome.elements, name
        for element in outcome.elements:
            assert outcome.text[element.char_start : element.char_end] == element.text, name
        if name in NO_STRUCTURE_IN_SOURCE:
            assert not has_structure(outcome), f"{name} now has structure: move it to KNOWN_GOOD"
        else:
            assert has_structure(outcome), f"{name}: no page or heading metadata"


def test_known_good_files_parse(outcomes: dict[str, Outcome]) -> None:
    failed = {
        name: str(outcomes[name])
        for name in KNOWN_GOOD | set(NO_STRUCTURE_IN_SOURCE)
        if isinstance(outcomes[name], ParseError)
    }
    assert not failed


def test_expected_failures_say_why(outcomes: dict[str, Outcome]) -> None:
    for name, fragment in EXPECTED_FAILURES.items():
        outcome = outcomes[name]
        assert isinstance(outcome, ParseError), f"{name} should fail"
        assert fragment in outcome.reason, outcome.reason


def test_paged_formats_report_pages(outcomes: dict[str, Outcome]) -> None:
    for name in KNOWN_GOOD:
        if Path(name).suffix in {".pdf", ".pptx", ".xlsx"}:
            doc = outcomes[name]
            assert isinstance(doc, ParsedDocument) and doc.has_pages, name
    deck = outcomes["sample-presentation.pptx"]
    assert isinstance(deck, ParsedDocument)
    assert {e.page for e in deck.elements} == {1, 2, 3, 4}
    paper = outcomes["multi-column-2p.pdf"]
    assert isinstance(paper, ParsedDocument)
    assert {e.page for e in paper.elements} == {1, 2}


def test_heading_levels_from_sources_that_declare_them(outcomes: dict[str, Outcome]) -> None:
    levels = {
        name: {e.heading_level for e in doc.elements if e.category == "Title"}
        for name, doc in outcomes.items()
        if isinstance(doc, ParsedDocument)
    }
    assert levels["category-level.docx"] == {1, 2}
    assert levels["README.md"] == {2, 4}  # "## Example Docs", "#### XBRL 10-K"
    assert levels["sample-presentation.pptx"] >= {1}


def test_titles_and_decoding(outcomes: dict[str, Outcome]) -> None:
    def doc(name: str) -> ParsedDocument:
        outcome = outcomes[name]
        assert isinstance(outcome, ParsedDocument), name
        return outcome

    assert doc("fake-email.eml").title == "Test Email"
    assert doc("fake-email.msg").title == "Test Email"
    assert doc("example-with-scripts.html").title.startswith("Russian Offensive Campaign")
    assert doc("fake-text-utf-16.txt").text == doc("fake-text.txt").text
    assert "This is a test document to use for unit tests." in doc("fake-text-utf-16.txt").text
    # The NLP stand-in tells narrative from headings in real documents.
    categories = {e.category for e in doc("norwich-city.txt").elements}
    assert {"NarrativeText", "Title", "ListItem"} <= categories


def test_every_corpus_type_is_supported(outcomes: dict[str, Outcome]) -> None:
    suffixes = {Path(name).suffix.lstrip(".") for name in outcomes}
    assert suffixes <= SUPPORTED_TYPES
