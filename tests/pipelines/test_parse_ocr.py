"""OCR of scanned PDF pages and images (issue 22), with real tesseract and poppler.

Pages are rendered from known text (trove.bench.ocr), so what OCR reads is
checked against the truth: character accuracy, page numbers, page order. The
tools are installed by ``make setup`` (and ``.ci/run``); where they are truly
absent the tests that need them skip with the reason, and the ``needs_ocr`` tests
simulate their absence with a PATH that lacks them.
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
import zlib
from pathlib import Path

import pytest

from pipelines.config import LimitsConfig
from pipelines.errors import ParseError
from pipelines.ocr import OcrSettings, ocr_tools
from pipelines.parse import parse_file
from trove.bench.ocr import character_accuracy, known_text, mixed_pdf, render_page, scanned_pdf

HAVE_OCR = shutil.which("tesseract") is not None and shutil.which("pdftoppm") is not None
needs_tools = pytest.mark.skipif(
    not HAVE_OCR, reason="tesseract/pdftoppm not installed (make setup installs them as root)"
)

LINES = known_text(7)
TRUTH = "\n".join(LINES)
TEXT_PAGE = ["Quarterly harbour report", "Berth four reopened after the crane inspection."]


def parse(path: Path, **kw):
    return parse_file(path, doc_id=f"t:{path.name}", version="1", **kw)


def reason_class(path: Path, **kw) -> str:
    with pytest.raises(ParseError) as info:
        parse(path, **kw)
    assert path.name in str(info.value)
    return info.value.reason_class


@pytest.fixture
def page_image():
    return render_page(LINES, size=12, angle=0.6, noise=0.002, seed=7)


@pytest.fixture
def no_tesseract(monkeypatch, tmp_path):
    """A PATH without tesseract or pdftoppm (everything else this process runs is absolute)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}")
    ocr_tools.cache_clear()
    yield
    ocr_tools.cache_clear()


# -- OCR where it is needed ------------------------------------------------------------


@needs_tools
def test_a_scanned_pdf_is_read_with_its_page_number(tmp_path, page_image):
    doc = parse(scanned_pdf(tmp_path / "scan.pdf", [page_image]))
    assert doc.ocr_pages == 1 and doc.ocr_seconds > 0
    assert character_accuracy(doc.text, TRUTH) >= 0.9
    assert {e.page for e in doc.elements} == {1}
    assert doc.elements[0].text.startswith("Northwind scanned record 7")


@needs_tools
def test_a_mixed_pdf_keeps_its_text_page_and_ocrs_the_scanned_one_in_page_order(
    tmp_path, page_image
):
    doc = parse(mixed_pdf(tmp_path / "mixed.pdf", TEXT_PAGE, page_image))
    assert doc.ocr_pages == 1  # only page 2
    pages = [e.page for e in doc.elements]
    assert pages == sorted(pages) and set(pages) == {1, 2}
    page1 = " ".join(e.text for e in doc.elements if e.page == 1)
    page2 = "\n".join(e.text for e in doc.elements if e.page == 2)
    assert page1 == " ".join(TEXT_PAGE)  # the text layer, exactly: not OCR'd
    assert character_accuracy(page2, TRUTH) >= 0.9
    for element in doc.elements:
        assert doc.text[element.char_start : element.char_end] == element.text


@needs_tools
def test_always_ocrs_pages_that_have_text_too(tmp_path, page_image):
    doc = parse(mixed_pdf(tmp_path / "mixed.pdf", TEXT_PAGE, page_image), ocr=OcrSettings("always"))
    assert doc.ocr_pages == 2
    assert "crane inspection" in doc.text


@needs_tools
@pytest.mark.parametrize("kind", ["png", "jpg", "bmp", "webp"])
def test_images_become_documents(tmp_path, page_image, kind):
    path = tmp_path / f"photo.{kind}"
    page_image.save(path, **({"quality": 90} if kind in ("jpg", "webp") else {}))
    doc = parse(path)
    assert doc.ocr_pages == 1 and doc.title == "photo"
    assert character_accuracy(doc.text, TRUTH) >= 0.9


@needs_tools
def test_a_multi_page_tiff_gives_each_page_its_number(tmp_path, page_image):
    second = render_page(TEXT_PAGE, size=14)
    path = tmp_path / "fax.tiff"
    page_image.save(path, save_all=True, append_images=[second], compression="tiff_deflate")
    doc = parse(path)
    assert doc.ocr_pages == 2
    assert "crane inspection" in " ".join(e.text for e in doc.elements if e.page == 2)
    assert character_accuracy("\n".join(e.text for e in doc.elements if e.page == 1), TRUTH) >= 0.9


# -- without OCR -----------------------------------------------------------------------


def test_without_tesseract_a_scan_or_an_image_needs_ocr(tmp_path, page_image, no_tesseract):
    assert ocr_tools().tesseract is None
    scan = scanned_pdf(tmp_path / "scan.pdf", [page_image])
    with pytest.raises(ParseError) as info:
        parse(scan)
    assert info.value.reason_class == "needs_ocr"
    assert "tesseract is not installed" in str(info.value) and "tesseract-ocr" in str(info.value)
    page_image.save(tmp_path / "photo.png")
    assert reason_class(tmp_path / "photo.png") == "needs_ocr"


def test_without_tesseract_a_mixed_pdf_keeps_its_text_pages(tmp_path, page_image, no_tesseract):
    doc = parse(mixed_pdf(tmp_path / "mixed.pdf", TEXT_PAGE, page_image))
    assert doc.ocr_pages == 0 and doc.ocr_pages_skipped == 1
    assert {e.page for e in doc.elements} == {1}


def test_ocr_off_is_needs_ocr_with_its_own_message(tmp_path, page_image):
    scan = scanned_pdf(tmp_path / "scan.pdf", [page_image])
    with pytest.raises(ParseError) as info:
        parse(scan, ocr=OcrSettings("off"))
    assert info.value.reason_class == "needs_ocr" and "OCR is off" in str(info.value)


@needs_tools
def test_a_language_without_data_is_needs_ocr_naming_the_package(tmp_path, page_image):
    page_image.save(tmp_path / "photo.png")
    with pytest.raises(ParseError) as info:
        parse(tmp_path / "photo.png", ocr=OcrSettings("auto", ("eng", "zzz")))
    assert info.value.reason_class == "needs_ocr" and "tesseract-ocr-zzz" in str(info.value)


# -- hostile input: refused before rendering, each with its own reason class ------------


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG that declares ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
    return path


@needs_tools
def test_a_decompression_bomb_image_is_refused_before_decoding(tmp_path):
    path = _png_header_only(tmp_path / "bomb.png", 60_000, 60_000)  # 3.6 Gpx in ~100 bytes
    assert path.stat().st_size < 200
    assert reason_class(path) == "decompression_bomb"
    # Over our limit but under PIL's own hard stop: still ours to refuse.
    small = _png_header_only(tmp_path / "wide.png", 12_000, 10_000)
    assert reason_class(small, limits=LimitsConfig(max_image_pixels=100_000_000)) == (
        "decompression_bomb"
    )


@needs_tools
def test_a_huge_pdf_page_is_refused_before_rendering(tmp_path):
    from reportlab.pdfgen import canvas

    path = tmp_path / "poster.pdf"
    pdf = canvas.Canvas(str(path), pagesize=(14_400, 14_400))  # 200 x 200 inches, no text
    pdf.rect(10, 10, 100, 100)
    pdf.showPage()
    pdf.save()
    assert reason_class(path) == "decompression_bomb"


@needs_tools
def test_too_many_pages_to_ocr_is_refused_before_rendering(tmp_path, page_image):
    path = scanned_pdf(tmp_path / "binder.pdf", [page_image] * 6)
    assert reason_class(path, limits=LimitsConfig(max_ocr_pages=5)) == "too_many_pages"
    tiff = tmp_path / "stack.tiff"
    small = page_image.resize((200, 260))
    small.save(tiff, save_all=True, append_images=[small] * 7)
    assert reason_class(tiff, limits=LimitsConfig(max_ocr_pages=5)) == "too_many_pages"


def test_thousands_of_pages_are_refused_before_any_page_is_read(tmp_path):
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(3_000):
        writer.add_blank_page(612, 792)
    path = tmp_path / "thousands.pdf"
    with path.open("wb") as fh:
        writer.write(fh)
    assert reason_class(path) == "too_many_pages"  # limits.max_pages is 2,000


@needs_tools
def test_ocr_past_its_budget_is_ocr_timeout(tmp_path, page_image):
    path = scanned_pdf(tmp_path / "slow.pdf", [page_image, page_image])
    limits = LimitsConfig(ocr_page_timeout_s=0.05)
    assert reason_class(path, limits=limits) == "ocr_timeout"


@needs_tools
def test_corrupt_images_are_malformed_or_type_mismatch(tmp_path, page_image):
    page_image.save(tmp_path / "good.png")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 3])
    assert reason_class(tmp_path / "truncated.png") == "malformed"
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(4000))
    assert reason_class(tmp_path / "garbage.jpg") == "malformed"
    (tmp_path / "not-an-image.png").write_bytes(b"PK\x03\x04" + os.urandom(100))
    assert reason_class(tmp_path / "not-an-image.png") == "type_mismatch"


def test_an_image_bomb_inside_a_docx_is_never_decoded(tmp_path):
    """Images embedded in Office files are not OCR'd: their text is parsed, the image skipped."""
    from docx import Document

    bomb = _png_header_only(tmp_path / "bomb.png", 60_000, 60_000)
    path = tmp_path / "memo.docx"
    document = Document()
    document.add_paragraph("The harbour memo is attached below.")
    document.save(path)
    import zipfile

    with zipfile.ZipFile(path, "a") as zf:
        zf.write(bomb, "word/media/image1.png")
    doc = parse(path)
    assert "harbour memo" in doc.text and doc.ocr_pages == 0


def test_images_are_listed_as_supported_types():
    from pipelines.parse import SUPPORTED_TYPES

    assert {"png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp"} <= SUPPORTED_TYPES


@needs_tools
def test_a_hostile_batch_through_the_worker_pool_quarantines_each_and_parses_the_rest(
    tmp_path, page_image
):
    from core.acl_policy import AclPolicy
    from pipelines.config import SourceConfig
    from pipelines.parse_worker import make_parse_fn
    from pipelines.stages import parse_pending, scan_source
    from pipelines.store import StagingStore

    docs = tmp_path / "docs"
    docs.mkdir()
    page_image.save(docs / "good.png")
    scanned_pdf(docs / "scan.pdf", [page_image])
    _png_header_only(docs / "bomb.png", 60_000, 60_000)
    data = (docs / "good.png").read_bytes()
    (docs / "truncated.png").write_bytes(data[: len(data) // 3])
    scanned_pdf(docs / "binder.pdf", [page_image.resize((300, 400))] * 4)
    config = SourceConfig.model_validate(
        {"name": "scans", "path": str(docs), "limits": {"max_ocr_pages": 3}}
    )
    store = StagingStore(tmp_path / "state" / "staging.db")
    scan_source(config, store, AclPolicy.from_config(config.acl))
    with make_parse_fn(config.limits, workers=2) as parse:
        result = parse_pending(store, parse)
        totals = dict(parse.ocr_totals)
    failed = {f.path: f.reason_class for f in result.failures}
    assert failed == {
        "bomb.png": "decompression_bomb",
        "truncated.png": "malformed",
        "binder.pdf": "too_many_pages",
    }
    assert result.counts["documents_parsed"] == 2
    for doc_id in ("scans:good.png", "scans:scan.pdf"):
        assert character_accuracy(store.get_parsed(doc_id).text, TRUTH) >= 0.9
    assert totals["pages_ocr"] == 2 and totals["documents_ocr"] == 2
