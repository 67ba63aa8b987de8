"""Pre-parse guard checks and post-parse limits, on generated hostile files (no worker)."""

from __future__ import annotations

import io
import struct
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.config import LimitsConfig
from pipelines.errors import REASON_CLASSES, ParseError
from pipelines.guard import check_document, check_parsed
from pipelines.models import ParsedDocument, ParsedElement
from pipelines.parse import parse_file
from tests.pipelines import hostile_files as hostile

LIMITS = LimitsConfig()


def _reason_class(path: Path, limits: LimitsConfig = LIMITS) -> str:
    with pytest.raises(ParseError) as info:
        check_document(path, path.suffix, limits)
    assert path.name in str(info.value)  # the message names the file
    return info.value.reason_class


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (hostile.make_zip_bomb_docx, "zip_bomb"),
        (hostile.make_lying_zip_docx, "zip_bomb"),
        (lambda d: hostile.make_many_members_docx(d, 10_001), "zip_bomb"),
        (hostile.make_encrypted_docx, "encrypted"),
        (lambda d: hostile.make_noise(d, "noise.pdf"), "type_mismatch"),
        (lambda d: hostile.make_noise(d, "noise.docx"), "type_mismatch"),
        (lambda d: hostile.make_noise(d, "noise.html"), "type_mismatch"),
        (lambda d: hostile.make_noise(d, "noise.txt"), "type_mismatch"),
        (lambda d: hostile.make_noise(d, "noise.rtf"), "type_mismatch"),
        (hostile.make_zip_named_docx, "type_mismatch"),
        (hostile.make_empty, "empty"),
        (hostile.make_whitespace, "empty"),
        (lambda d: hostile.make_text(d, "tool.exe", "MZ"), "unsupported"),
    ],
    ids=[
        "zip-bomb",
        "lying-directory",
        "too-many-members",
        "encrypted-docx",
        "noise-pdf",
        "noise-docx",
        "noise-html",
        "noise-txt",
        "noise-rtf",
        "zip-not-ooxml",
        "empty",
        "whitespace",
        "unsupported",
    ],
)
def test_hostile_file_is_refused_with_its_reason_class(
    tmp_path: Path, make: Callable[[Path], Path], expected: str
) -> None:
    path = make(tmp_path)
    started = time.perf_counter()
    assert _reason_class(path) == expected
    assert time.perf_counter() - started < 1.0  # reads the head and the zip directory only


def test_too_large_is_checked_first(tmp_path: Path) -> None:
    path = hostile.make_text(tmp_path, "big.md", "# Title\n\n" + "word " * 1000)
    assert _reason_class(path, LimitsConfig(max_bytes=1000)) == "too_large"


def test_archive_limits_follow_the_config(tmp_path: Path) -> None:
    good = hostile.make_docx(tmp_path)
    check_document(good, "docx", LIMITS)  # a normal document passes
    assert _reason_class(good, LimitsConfig(max_archive_members=3)) == "zip_bomb"
    assert _reason_class(good, LimitsConfig(max_archive_uncompressed_bytes=1000)) == "zip_bomb"


def test_zip_bomb_generator_is_quick_and_small(tmp_path: Path) -> None:
    started = time.perf_counter()
    path = hostile.make_zip_bomb_docx(tmp_path)
    assert time.perf_counter() - started < 5.0
    assert path.stat().st_size < 2 * 1024 * 1024
    with zipfile.ZipFile(path) as zf:
        assert sum(m.file_size for m in zf.infolist()) >= 200 * 1024 * 1024


def test_zipfile_never_inflates_past_the_declared_size() -> None:
    """Why the guard trusts declared sizes: an under-declared member fails its CRC."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("word/document.xml", b"0" * 5_000_000)
    data = bytearray(buffer.getvalue())
    struct.pack_into("<I", data, data.find(b"PK\x03\x04") + 22, 1000)
    struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 24, 1000)
    with (
        zipfile.ZipFile(io.BytesIO(bytes(data))) as zf,
        pytest.raises(zipfile.BadZipFile, match="CRC"),
    ):
        zf.read("word/document.xml")


@pytest.mark.parametrize(
    "make",
    [hostile.make_utf16_text, hostile.make_cp1252_text, hostile.make_docx, hostile.make_pdf],
    ids=["utf16", "cp1252", "docx", "pdf"],
)
def test_good_files_pass_the_guard(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    path = make(tmp_path)
    check_document(path, path.suffix, LIMITS)


def test_bom_less_utf16_is_text_not_binary(tmp_path: Path) -> None:
    path = hostile.make_text(tmp_path, "wide.txt", "Plain words in UTF-16.\n" * 20, "utf-16-le")
    check_document(path, "txt", LIMITS)


def _parsed(chars: int, elements: int, page: int | None) -> ParsedDocument:
    items = tuple(ParsedElement("NarrativeText", "x", 0, 1, page=page) for _ in range(elements))
    return ParsedDocument("s:doc", "v1", "t", "x" * chars, items)


@pytest.mark.parametrize(
    ("parsed", "measure"),
    [
        (_parsed(101, 1, 1), "limits.max_chars"),
        (_parsed(10, 11, 1), "limits.max_elements"),
        (_parsed(10, 1, 6), "limits.max_pages"),
    ],
    ids=["chars", "elements", "pages"],
)
def test_check_parsed_refuses_over_limit(parsed: ParsedDocument, measure: str) -> None:
    limits = LimitsConfig(max_chars=100, max_elements=10, max_pages=5)
    with pytest.raises(ParseError, match=measure) as info:
        check_parsed(parsed, limits, "doc.pdf")
    assert info.value.reason_class == "limit_exceeded"
    check_parsed(_parsed(100, 10, 5), limits)  # at the limits: accepted


def test_parse_file_refuses_huge_plain_text_before_partitioning(tmp_path: Path) -> None:
    path = hostile.make_single_line_text(tmp_path, megabytes=50)
    started = time.perf_counter()
    with pytest.raises(ParseError, match=r"limits\.max_chars") as info:
        parse_file(path, doc_id="s:one", version="1", max_chars=LIMITS.max_chars)
    assert info.value.reason_class == "limit_exceeded"
    assert time.perf_counter() - started < 10.0


def test_parse_file_wraps_long_lines(tmp_path: Path) -> None:
    path = hostile.make_text(tmp_path, "long.txt", "Intro line.\n" + "abcdefghij" * 100 + "\n")
    parsed = parse_file(path, doc_id="s:long", version="1", max_line_chars=50)
    assert "abcdefghij" * 5 in parsed.text
    assert "abcdefghij" * 6 not in parsed.text  # no run longer than the width survives


def test_parse_errors_carry_known_reason_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown reason class"):
        ParseError("x", reason_class="bogus")
    with pytest.raises(ParseError) as info:
        parse_file(hostile.make_encrypted_docx(tmp_path), doc_id="s:e", version="1")
    assert info.value.reason_class == "encrypted"
    assert set(REASON_CLASSES) >= {"timeout", "parser_crash", "limit_exceeded", "zip_bomb"}
