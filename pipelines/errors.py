"""Errors raised by the ingestion stages; each carries a human-readable reason.

Callers (Dagster assets, the CLI) record a :class:`PipelineError` as a
``DocumentFailure`` for that document and carry on with the others.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: an ingestion stage could not process a document."""

    def __init__(self, reason: str) -> None:
        if not reason or not reason.strip():
            raise ValueError("a pipeline error needs a non-empty reason")
        super().__init__(reason)
        self.reason = reason


class ParseError(PipelineError):
    """A document could not be turned into text (unsupported, empty, encrypted, malformed...).

    ``str(error)`` is the reason alone (it names the file); ``path`` is the file
    parsed, when known, for callers that want it separately.
    """

    def __init__(self, reason: str, *, path: str | None = None) -> None:
        super().__init__(reason)
        self.path = path


class UnsupportedFormatError(ParseError):
    """The file type has no parser (the reason lists the supported types)."""
