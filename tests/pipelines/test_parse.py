"""Parse stage, with the real unstructured on small documents built by the real format libraries."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.models import SourceDocument
from core.acl import Acl
from pipelines import offline_nlp
from pipelines.errors import ParseError, PipelineError, UnsupportedFormatError
from pipelines.models import ELEMENT_SEPARATOR, ParsedDocument
from pipelines.parse import SUPPORTED_TYPES, normalise_text, parse_document, parse_file
from tests.pipelines.parse_fixtures import (
    HTML,
    MARKDOWN,
    NARRATIVE_1,
    NARRATIVE_2,
    write_docx,
    write_eml,
    write_pdf,
    write_pptx,
    write_xlsx,
)


def parse(path: Path, **kwargs: str) -> ParsedDocument:
    doc = parse_file(path, doc_id=f"test:{path.name}", version="v1", **kwargs)
    assert_consistent(doc)
    return doc


def assert_consistent(doc: ParsedDocument) -> None:
    """Offsets are exact, elements are in order, and the text is exactly their join."""
    assert doc.elements, "a successful parse has elements"
    for element in doc.elements:
        assert doc.text[element.char_start : element.char_end] == element.text
        assert element.text == element.text.strip() and element.text
    assert doc.text == ELEMENT_SEPARATOR.join(e.text for e in doc.elements)
    assert "\x00" not in doc.text


def titles(doc: ParsedDocument) -> list[tuple[str, int | None]]:
    return [(e.text, e.heading_level) for e in doc.elements if e.category == "Title"]


def categories_of(doc: ParsedDocument, text: str) -> set[str]:
    return {e.category for e in doc.elements if text in e.text}


# ------------------------------------------------------------------ formats


def test_markdown_front_matter_gives_the_title_and_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "travel.md"
    path.write_text(MARKDOWN, encoding="utf-8")
    doc = parse(path)
    assert doc.title == "Travel and leave"
    assert "redirect_from" not in doc.text and "title:" not in doc.text
    assert "{%" not in doc.text  # standalone template tags are markup, not content
    assert titles(doc) == [("Travel basics", 1), ("Booking", 2), ("Hotels", 3)]
    assert categories_of(doc, "reviews every request") == {"NarrativeText"}
    assert categories_of(doc, "Book hotels") == {"ListItem"}
    assert not doc.has_pages


def test_html_title_tag_and_heading_levels(tmp_path: Path) -> None:
    path = tmp_path / "leave.html"
    path.write_text(HTML, encoding="utf-8")
    doc = parse(path)
    assert doc.title == "Leave & Travel Policy"
    assert titles(doc) == [("Leave policy", 1), ("Requesting leave", 2)]
    assert categories_of(doc, "Managers approve leave") == {"NarrativeText"}


def test_plain_text_narrative_and_title_falls_back_to_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "policy-notes.txt"
    path.write_text(f"{NARRATIVE_1}\n\n{NARRATIVE_2}\n", encoding="utf-8")
    doc = parse(path)
    assert [e.category for e in doc.elements] == ["NarrativeText", "NarrativeText"]
    assert doc.title == "policy-notes"
    assert parse(path, title="Policy notes").title == "Policy notes"


def test_text_opening_with_a_title_uses_it(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text(f"Expense Reporting Rules\n\n{NARRATIVE_1}\n", encoding="utf-8")
    doc = parse(path, title="fallback")
    assert doc.elements[0].category == "Title"
    assert doc.title == "Expense Reporting Rules"


WESTERN = "The café serves crème brûlée and the staff are friendly to visitors."


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("utf-8", WESTERN),
        ("utf-16", WESTERN),  # with BOM
        ("utf-32", WESTERN),
        ("utf-8-sig", WESTERN),
        ("utf-16-le", WESTERN),  # no BOM
        ("cp1252", WESTERN),
        ("cp1250", "Zażółć gęślą jaźń, powiedział pan Łukasz i poszedł do sklepu kupić chleb."),
        ("shift_jis", "これは日本語のテキストです。会議は明日の午後三時に始まります。"),
    ],
)
def test_text_encodings_decode(tmp_path: Path, encoding: str, body: str) -> None:
    path = tmp_path / f"{encoding}.txt"
    path.write_bytes(body.encode(encoding))
    assert parse(path).text == body


def test_html_declared_charset_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "latin.html"
    body = "<p>Le café était très chaud et les enfants ont mangé des crêpes.</p>"
    page = f'<html><head><meta charset="iso-8859-1"></head><body>{body}</body></html>'
    path.write_bytes(page.encode("iso-8859-1"))
    assert "Le café était très chaud" in parse(path).text


def test_control_characters_are_removed_but_newlines_and_tabs_kept() -> None:
    assert normalise_text("a\x00b\x07c\r\nd\te\x0cf\ufeff") == "abc\nd\tef"


def test_nul_bytes_in_a_text_file_do_not_reach_the_text(tmp_path: Path) -> None:
    path = tmp_path / "nul.txt"
    path.write_bytes(b"The office is open\x00 today and the team works from\x01 home.")
    doc = parse(path)
    assert doc.text == "The office is open today and the team works from home."


def test_csv_becomes_a_table(tmp_path: Path) -> None:
    path = tmp_path / "cups.csv"
    path.write_text("Team,Location,Cups\nBlues,STL,1\nFlyers,PHI,2\n", encoding="utf-8")
    doc = parse(path)
    assert [e.category for e in doc.elements] == ["Table"]
    assert "Flyers" in doc.text and "PHI" in doc.text


def test_tsv_becomes_a_table(tmp_path: Path) -> None:
    path = tmp_path / "staff.tsv"
    path.write_text("Name\tTeam\nAda\tPlatform\nGrace\tSearch\n", encoding="utf-8")
    doc = parse(path)
    assert [e.category for e in doc.elements] == ["Table"]
    assert "Grace" in doc.text


def test_xml_text_content(tmp_path: Path) -> None:
    path = tmp_path / "catalog.xml"
    path.write_text(
        '<?xml version="1.0"?><catalog><book><title>Sea Stories</title>'
        "<summary>The crew sailed north and found an island.</summary></book></catalog>",
        encoding="utf-8",
    )
    doc = parse(path)
    assert [e.text for e in doc.elements] == [
        "Sea Stories",
        "The crew sailed north and found an island.",
    ]


def test_epub_chapters_and_heading_levels(tmp_path: Path) -> None:
    import pypandoc

    path = tmp_path / "book.epub"
    pypandoc.convert_text(
        f"# Chapter One\n\n{NARRATIVE_1}\n\n## Landing\n\n{NARRATIVE_2}\n",
        "epub",
        format="md",
        outputfile=str(path),
        extra_args=["--metadata", "title=Sea Book"],
    )
    doc = parse(path)
    assert titles(doc) == [("Chapter One", 1), ("Landing", 2)]
    assert categories_of(doc, "Managers approve leave") == {"NarrativeText"}


def test_docx_headings_levels_and_page_break(tmp_path: Path) -> None:
    doc = parse(write_docx(tmp_path / "guide.docx"))
    assert titles(doc) == [("Onboarding guide", 1), ("First week", 2), ("Second page heading", 1)]
    assert doc.title == "Onboarding guide"
    assert categories_of(doc, "travel team reviews") == {"NarrativeText"}
    pages = {e.text: e.page for e in doc.elements}
    assert pages["Onboarding guide"] == 1
    assert pages["Second page heading"] == 2
    assert "PageBreak" not in {e.category for e in doc.elements}


def test_pptx_slides_are_pages(tmp_path: Path) -> None:
    doc = parse(write_pptx(tmp_path / "deck.pptx"))
    assert [(e.text, e.page) for e in doc.elements if e.category == "Title"] == [
        ("Quarterly review part 1", 1),
        ("Quarterly review part 2", 2),
    ]
    assert {e.page for e in doc.elements if NARRATIVE_2[:20] in e.text} == {2}


def test_xlsx_sheets_are_pages(tmp_path: Path) -> None:
    doc = parse(write_xlsx(tmp_path / "budget.xlsx"))
    tables = [e for e in doc.elements if e.category == "Table"]
    assert [e.page for e in tables] == [1, 2]
    assert "Laptops" in tables[0].text and "Grace" in tables[1].text


def test_eml_subject_header_and_body_without_attachments(tmp_path: Path) -> None:
    doc = parse(write_eml(tmp_path / "offsite.eml"))
    assert doc.title == "Quarterly offsite plans"
    assert doc.elements[0].category == "Title" and doc.elements[0].heading_level == 1
    header = doc.elements[1].text
    assert "From: Ada Lovelace <ada@example.org>" in header
    assert "To: team@example.org" in header
    assert "Date: 2026-03-03T10:15:00+00:00" in header
    assert NARRATIVE_1[:30] in doc.text
    assert "ATTACHMENT-SECRET-CONTENT" not in doc.text


def test_pdf_two_pages(tmp_path: Path) -> None:
    doc = parse(write_pdf(tmp_path / "report.pdf"))
    assert [(e.text, e.page) for e in doc.elements if e.category == "Title"] == [
        ("Chapter 1 Overview", 1),
        ("Chapter 2 Overview", 2),
    ]
    assert doc.has_pages
    narrative = [e for e in doc.elements if e.category == "NarrativeText"]
    assert [e.page for e in narrative] == [1, 2]


def test_same_file_gives_identical_output(tmp_path: Path) -> None:
    path = write_docx(tmp_path / "same.docx")
    assert parse(path) == parse(path)


def test_parse_document_reads_local_path_and_uses_connector_title(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text(f"{NARRATIVE_1}\n", encoding="utf-8")
    source = SourceDocument(
        doc_id="files:notes.txt",
        source="files",
        path="notes.txt",
        uri=path.as_uri(),
        title="Team notes",
        version="abc",
        size=path.stat().st_size,
        modified_at=datetime(2026, 1, 1, tzinfo=UTC),
        doc_type="txt",
        acl=Acl.empty(),
        local_path=path,
    )
    doc = parse_document(source)
    assert (doc.doc_id, doc.version, doc.title) == ("files:notes.txt", "abc", "Team notes")
    with pytest.raises(ParseError, match="no local file"):
        parse_document(
            SourceDocument(**{**source.__dict__, "local_path": None})  # type: ignore[arg-type]
        )


def test_doc_type_overrides_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "README"
    path.write_text("# Heading\n\nThe team writes documentation and it is kept current.\n")
    doc = parse(path, doc_type="md")
    assert titles(doc) == [("Heading", 1)]


def test_supported_types_cover_the_required_formats() -> None:
    required = {"pdf", "docx", "pptx", "xlsx", "html", "htm", "md", "markdown", "txt", "text"}
    required |= {"eml", "msg", "csv", "odt", "rtf", "epub"}
    assert required <= SUPPORTED_TYPES


# ------------------------------------------------------------------ failures


def reason_of(path: Path) -> str:
    with pytest.raises(ParseError) as info:
        parse_file(path, doc_id="test:x", version="v1")
    reason = str(info.value)
    assert reason == info.value.reason and reason.strip()
    assert isinstance(info.value, PipelineError)
    return reason


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    assert "empty (0 bytes)" in reason_of(path)


@pytest.mark.parametrize("name", ["blank.txt", "blank.md", "blank.pdf", "blank.docx"])
def test_whitespace_only_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"  \n\t \r\n  ")
    assert "only whitespace" in reason_of(path)


def test_whitespace_only_utf16_text(tmp_path: Path) -> None:
    path = tmp_path / "blank16.txt"
    path.write_bytes(" \n \n".encode("utf-16"))
    assert "only whitespace" in reason_of(path)


def test_markdown_with_only_front_matter(tmp_path: Path) -> None:
    path = tmp_path / "redirect.md"
    path.write_text("---\ntitle: Moved\nredirect_to: /elsewhere/\n---\n", encoding="utf-8")
    assert "no content after its front matter" in reason_of(path)


def test_unsupported_extension_lists_supported_types(tmp_path: Path) -> None:
    path = tmp_path / "photo.xyz"
    path.write_bytes(b"something")
    with pytest.raises(UnsupportedFormatError) as info:
        parse_file(path, doc_id="test:x", version="v1")
    assert ".xyz" in str(info.value) and "pdf" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot read 'gone.txt'" in reason_of(tmp_path / "gone.txt")


def test_binary_noise_named_pdf(tmp_path: Path) -> None:
    path = tmp_path / "noise.pdf"
    path.write_bytes(os.urandom(4096).replace(b"%PDF-", b"xxxxx"))
    assert "is not a PDF" in reason_of(path)


def test_truncated_pdf(tmp_path: Path) -> None:
    data = write_pdf(tmp_path / "full.pdf").read_bytes()
    path = tmp_path / "truncated.pdf"
    path.write_bytes(data[: len(data) // 2])
    assert "malformed PDF 'truncated.pdf'" in reason_of(path)


def test_pdf_without_text(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "drawing.pdf", with_text=False)
    reason = reason_of(path)
    assert "2 page(s) but no extractable text" in reason


def test_password_protected_pdf(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "locked.pdf", password="s3cret")
    assert "password-protected" in reason_of(path)


def test_docx_that_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "fake.docx"
    path.write_bytes(b"this is plain text pretending to be a word document")
    assert "not a valid DOCX file" in reason_of(path)


def test_ole_file_named_docx(tmp_path: Path) -> None:
    path = tmp_path / "locked.docx"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 1024)
    assert "OLE" in reason_of(path)


def test_encrypted_email(tmp_path: Path) -> None:
    path = tmp_path / "secret.eml"
    path.write_text(
        "From: a@example.org\nTo: b@example.org\nSubject: s\nMime-Version: 1.0\n"
        'Content-Type: multipart/encrypted; boundary=foo; protocol="application/pgp-encrypted"\n'
        "\n--foo\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n--foo\n"
        "Content-Type: application/octet-stream\n\n-----BEGIN PGP MESSAGE-----\nabc\n"
        "-----END PGP MESSAGE-----\n--foo--\n",
        encoding="ascii",
    )
    assert "encrypted" in reason_of(path)


def test_parse_error_needs_a_reason() -> None:
    with pytest.raises(ValueError):
        ParseError("  ")


# ------------------------------------------------------------------ offline NLP stand-in


@pytest.mark.parametrize(
    ("previous", "word", "tag"),
    [
        (None, "is", "VBZ"),
        ("they", "were", "VBD"),
        ("has", "been", "VBN"),
        ("it", "can", "MD"),
        ("can", "download", "VB"),
        ("we", "need", "VBP"),
        ("system", "supports", "VBZ"),
        ("the", "supports", None),
        ("he", "went", "VBD"),
        (None, "processing", "VBG"),
        (None, "completed", "VBD"),
        (None, "nothing", None),
        (None, "speed", None),
        ("the", "report", None),
        ("to", "paris", None),
        ("to", "review", "VB"),
    ],
)
def test_rule_tagger(previous: str | None, word: str, tag: str | None) -> None:
    assert offline_nlp.tag_for(word, previous) == tag


def test_stand_in_replaces_unstructured_loader_when_model_missing() -> None:
    import unstructured.nlp.tokenize as tokenize

    using_stand_in = offline_nlp.install_offline_nlp()
    assert offline_nlp.install_offline_nlp() == using_stand_in  # idempotent
    assert using_stand_in == (not offline_nlp.real_model_installed())
    if using_stand_in:
        assert tokenize._get_nlp is offline_nlp.load_offline_nlp
    tags = dict(tokenize.pos_tag("The manager approved the request and it was filed."))
    assert tags["approved"].startswith("VB") and tags["was"].startswith("VB")
    assert tokenize.sent_tokenize("It rained. We stayed inside.") == [
        "It rained.",
        "We stayed inside.",
    ]
