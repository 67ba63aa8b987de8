"""One list of the formats Trove reads: what connectors hand over is what the parser reads."""

from __future__ import annotations

from core.formats import DOCUMENT_TYPES, IMAGE_TYPES, SUPPORTED_TYPES
from pipelines import ocr, parse


def test_the_parser_has_one_reader_per_supported_type():
    assert set(parse._FORMATS) == SUPPORTED_TYPES
    assert parse.SUPPORTED_TYPES is SUPPORTED_TYPES


def test_images_are_the_ocr_stages_and_the_rest_are_documents():
    read_by_ocr = {kind for kind, f in parse._FORMATS.items() if f.module == ocr.__name__}
    assert read_by_ocr == IMAGE_TYPES
    assert not hasattr(ocr, "IMAGE_TYPES")  # one definition: core.formats
    assert not DOCUMENT_TYPES & IMAGE_TYPES
    assert all(t == t.lower() and not t.startswith(".") for t in SUPPORTED_TYPES)
