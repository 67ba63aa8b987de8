"""Errors raised by the ingestion stages; each carries a human-readable reason.

Callers (Dagster assets, the CLI) record a :class:`PipelineError` as a
``DocumentFailure`` for that document and carry on with the others.
"""

from __future__ import annotations

from core.errors import TroveError


class PipelineError(TroveError):
    """Base class: an ingestion stage could not process a document."""

    def __init__(self, reason: str) -> None:
        if not reason or not reason.strip():
            raise ValueError("a pipeline error needs a non-empty reason")
        super().__init__(reason)
        self.reason = reason


# Why a document was quarantined, in a word a dashboard can group by.
REASON_CLASSES: tuple[str, ...] = (
    "too_large",  # over limits.max_bytes
    "zip_bomb",  # archive member count, uncompressed size or ratio over the limits
    "encrypted",  # password-protected PDF, Office file or e-mail
    "empty",  # no bytes, whitespace only, or no extractable text
    "unsupported",  # no parser for the type (or its optional dependency is missing)
    "type_mismatch",  # the content is not what the extension says
    "malformed",  # the parser refused the content
    "timeout",  # the parser ran past limits.timeout_s and was killed
    "parser_crash",  # the parser process died or raised an unexpected error
    "limit_exceeded",  # pages, characters or elements over the limits
    "unreadable",  # the file could not be read at all (permissions, vanished)
    "changed_during_sync",  # a link, or another or modified file, since the scan read it
    "needs_ocr",  # only scanned pages or an image, and tesseract is not installed (or ocr: off)
    "decompression_bomb",  # an image or page whose pixel count is over limits.max_image_pixels
    "too_many_pages",  # more pages to OCR than limits.max_ocr_pages
    "ocr_timeout",  # OCR of one document ran past limits.ocr_timeout_s in total
)


class ParseError(PipelineError):
    """A document could not be turned into text (unsupported, empty, encrypted, malformed...).

    ``str(error)`` is the reason alone (it names the file); ``path`` is the file
    parsed, when known, for callers that want it separately; ``reason_class`` is
    one of :data:`REASON_CLASSES` (the subclass's default unless given).
    """

    reason_class: str = "malformed"

    def __init__(
        self, reason: str, *, path: str | None = None, reason_class: str | None = None
    ) -> None:
        super().__init__(reason)
        self.path = path
        if reason_class is not None:
            if reason_class not in REASON_CLASSES:
                raise ValueError(
                    f"unknown reason class {reason_class!r} (valid: {', '.join(REASON_CLASSES)})"
                )
            self.reason_class = reason_class


class UnsupportedFormatError(ParseError):
    """The file type has no parser (the reason lists the supported types)."""

    reason_class = "unsupported"


class TooLargeError(ParseError):
    reason_class = "too_large"


class ZipBombError(ParseError):
    reason_class = "zip_bomb"


class EncryptedDocumentError(ParseError):
    reason_class = "encrypted"


class EmptyDocumentError(ParseError):
    reason_class = "empty"


class TypeMismatchError(ParseError):
    reason_class = "type_mismatch"


class ParseTimeoutError(ParseError):
    reason_class = "timeout"


class ParserCrashError(ParseError):
    reason_class = "parser_crash"


class LimitExceededError(ParseError):
    reason_class = "limit_exceeded"


class ChangedDuringSyncError(ParseError):
    """The file is no longer the one the scan read (swapped, replaced by a link, gone)."""

    reason_class = "changed_during_sync"


class NeedsOcrError(ParseError):
    reason_class = "needs_ocr"


class DecompressionBombError(ParseError):
    reason_class = "decompression_bomb"


class TooManyPagesError(ParseError):
    reason_class = "too_many_pages"


class OcrTimeoutError(ParseError):
    reason_class = "ocr_timeout"
