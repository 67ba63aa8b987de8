"""The file formats Trove parses, by lower-case extension without the dot.

Connectors read this to skip what could never be indexed (a Confluence
attachment of another type is not even downloaded); the parse stage
(:mod:`pipelines.parse`) has one reader for each of them.
"""

from __future__ import annotations

IMAGE_TYPES: frozenset[str] = frozenset({"png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp"})
"""Image extensions that become documents through OCR."""

DOCUMENT_TYPES: frozenset[str] = frozenset(
    {
        "pdf",
        "docx",
        "pptx",
        "xlsx",
        "odt",
        "rtf",
        "epub",
        "eml",
        "msg",
        "html",
        "htm",
        "md",
        "markdown",
        "txt",
        "text",
        "xml",
        "csv",
        "tsv",
    }
)
"""Extensions whose text is extracted by a document parser (no OCR needed)."""

SUPPORTED_TYPES: frozenset[str] = DOCUMENT_TYPES | IMAGE_TYPES
"""Every extension the parse stage handles."""
