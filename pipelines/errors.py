"""Errors raised by the ingestion stages; each carries a human-readable reason.

Callers (Dagster assets, the CLI) record a :class:`PipelineError` as a
``DocumentFailure`` for that document and carry on with the others.
"""

from __future__ import annotations

from core.errors import TroveError
from pipelines.records import FailureReason


class PipelineError(TroveError):
    """Base class: an ingestion stage could not process a document."""

    def __init__(self, reason: str) -> None:
        if not reason or not reason.strip():
            raise ValueError("a pipeline error needs a non-empty reason")
        super().__init__(reason)
        self.reason = reason


# Why a document was quarantined, in a word a dashboard can group by: the values of
# FailureReason, the one list (each value's meaning is commented there).
REASON_CLASSES: tuple[str, ...] = tuple(str(reason) for reason in FailureReason)


class ParseError(PipelineError):
    """A document could not be turned into text (unsupported, empty, encrypted, malformed...).

    ``str(error)`` is the reason alone (it names the file); ``path`` is the file
    parsed, when known, for callers that want it separately; ``reason_class`` is
    one of :data:`REASON_CLASSES` (the subclass's default unless given).
    """

    reason_class: FailureReason = FailureReason.MALFORMED

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
            self.reason_class = FailureReason(reason_class)


class UnsupportedFormatError(ParseError):
    """The file type has no parser (the reason lists the supported types)."""

    reason_class = FailureReason.UNSUPPORTED


class TooLargeError(ParseError):
    reason_class = FailureReason.TOO_LARGE


class ZipBombError(ParseError):
    reason_class = FailureReason.ZIP_BOMB


class EncryptedDocumentError(ParseError):
    reason_class = FailureReason.ENCRYPTED


class EmptyDocumentError(ParseError):
    reason_class = FailureReason.EMPTY


class TypeMismatchError(ParseError):
    reason_class = FailureReason.TYPE_MISMATCH


class ParseTimeoutError(ParseError):
    reason_class = FailureReason.TIMEOUT


class ParserCrashError(ParseError):
    reason_class = FailureReason.PARSER_CRASH


class LimitExceededError(ParseError):
    reason_class = FailureReason.LIMIT_EXCEEDED


class ChangedDuringSyncError(ParseError):
    """The file is no longer the one the scan read (swapped, replaced by a link, gone)."""

    reason_class = FailureReason.CHANGED_DURING_SYNC


class NeedsOcrError(ParseError):
    reason_class = FailureReason.NEEDS_OCR


class DecompressionBombError(ParseError):
    reason_class = FailureReason.DECOMPRESSION_BOMB


class TooManyPagesError(ParseError):
    reason_class = FailureReason.TOO_MANY_PAGES


class OcrTimeoutError(ParseError):
    reason_class = FailureReason.OCR_TIMEOUT
