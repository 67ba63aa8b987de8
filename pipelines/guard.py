"""Checks around parsing: refuse hostile or oversized documents before a parser sees them.

:func:`check_document` runs in the calling process, before the file is handed to
the parse worker, so it only reads what is cheap to read: the file size, its
first bytes and, for ZIP containers, the central directory. :func:`check_parsed`
applies the limits that only a parse can measure (pages, characters, elements).
Each refusal is a :class:`~pipelines.errors.ParseError` whose ``reason_class``
names the kind of problem (see :data:`pipelines.errors.REASON_CLASSES`).

Zip bombs are judged from the central directory: member count, total declared
uncompressed size, and that size over the bytes on disk. Entries whose compressed
sizes add up to more than the archive itself overlap one another (the
"non-recursive" bomb). A member that declares a small size but inflates to a large
one is not a threat to the parsers here: Python's ``zipfile``, which python-docx,
python-pptx, openpyxl and ebooklib all read through, never yields more than the
declared size and raises on the CRC mismatch instead (pinned by a test).

Usage::

    from pipelines.guard import check_document, check_parsed

    check_document(path, "docx", source_config.limits)  # raises ParseError
"""

from __future__ import annotations

import codecs
import zipfile
from pathlib import Path

from pipelines.config import LimitsConfig
from pipelines.errors import (
    LimitExceededError,
    ParseError,
    TooLargeError,
    TypeMismatchError,
    ZipBombError,
)
from pipelines.models import ParsedDocument
from pipelines.parse import check_file

_ZIP_TYPES = frozenset({"docx", "pptx", "xlsx", "odt", "epub"})
_OOXML_TYPES = frozenset({"docx", "pptx", "xlsx"})
_TEXT_TYPES = frozenset(
    {"html", "htm", "md", "markdown", "txt", "text", "xml", "csv", "tsv", "eml"}
)
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HEAD_BYTES = 8192
# Below this much uncompressed data a high ratio is harmless (a small, repetitive
# spreadsheet compresses well); the ratio check exists for the big ones.
_RATIO_FLOOR_BYTES = 1024 * 1024
_MIB = 1024 * 1024


def check_document(path: Path, doc_type: str, limits: LimitsConfig) -> None:
    """Refuse a document before parsing when it is too large, hostile or not what it claims.

    :param doc_type: the extension to parse as (``"pdf"``; a leading dot is ignored).
    :raises ParseError: reason class ``too_large``, ``zip_bomb``, ``type_mismatch``,
        ``encrypted``, ``empty``, ``unsupported`` or ``malformed``.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ParseError(
            f"cannot read {path.name!r}: {exc.strerror or exc}", path=str(path)
        ) from exc
    if path.is_file() and size > limits.max_bytes:
        raise TooLargeError(
            f"{path.name!r} is {size:,} bytes, over the limit of {limits.max_bytes:,} "
            "(limits.max_bytes)",
            path=str(path),
        )
    kind = check_file(path, doc_type or None)
    with path.open("rb") as fh:
        head = fh.read(_HEAD_BYTES)
    if kind in _ZIP_TYPES:
        _check_archive(path, kind, size, limits)
    elif kind in _TEXT_TYPES:
        if _looks_binary(head):
            raise TypeMismatchError(
                f"{path.name!r} is named .{kind} but its content is binary, not text",
                path=str(path),
            )
    elif kind == "rtf" and not head.lstrip().startswith(b"{\\rtf"):
        raise TypeMismatchError(
            f"{path.name!r} is not an RTF file (no {{\\rtf header)", path=str(path)
        )
    elif kind == "msg" and not head.startswith(_OLE_MAGIC):
        raise TypeMismatchError(
            f"{path.name!r} is not an Outlook message (not an OLE compound file)",
            path=str(path),
        )


def check_parsed(parsed: ParsedDocument, limits: LimitsConfig, name: str = "") -> None:
    """Refuse a parse whose pages, characters or elements are over the limits.

    :param name: the file name, for the message (default: the document id).
    :raises LimitExceededError: naming the measure, its value and the limit.
    """
    shown = name or parsed.doc_id
    if len(parsed.text) > limits.max_chars:
        raise LimitExceededError(
            f"{shown!r} parsed to {len(parsed.text):,} characters, over the limit of "
            f"{limits.max_chars:,} (limits.max_chars)"
        )
    if len(parsed.elements) > limits.max_elements:
        raise LimitExceededError(
            f"{shown!r} parsed to {len(parsed.elements):,} elements, over the limit of "
            f"{limits.max_elements:,} (limits.max_elements)"
        )
    pages = max((e.page for e in parsed.elements if e.page is not None), default=0)
    if pages > limits.max_pages:
        raise LimitExceededError(
            f"{shown!r} has {pages:,} pages, over the limit of {limits.max_pages:,} "
            "(limits.max_pages)"
        )


def _check_archive(path: Path, kind: str, size: int, limits: LimitsConfig) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ParseError(
            f"malformed {kind.upper()} file {path.name!r}: unreadable ZIP directory ({exc})",
            path=str(path),
        ) from exc
    if len(members) > limits.max_archive_members:
        raise ZipBombError(
            f"{path.name!r} has {len(members):,} archive members, over the limit of "
            f"{limits.max_archive_members:,} (limits.max_archive_members)",
            path=str(path),
        )
    declared = sum(m.file_size for m in members)
    if declared > limits.max_archive_uncompressed_bytes:
        raise ZipBombError(
            f"{path.name!r} declares {declared / _MIB:,.1f} MiB uncompressed, over the limit of "
            f"{limits.max_archive_uncompressed_bytes / _MIB:,.1f} MiB "
            "(limits.max_archive_uncompressed_bytes)",
            path=str(path),
        )
    ratio = declared / max(size, 1)
    if declared >= _RATIO_FLOOR_BYTES and ratio > limits.max_compression_ratio:
        raise ZipBombError(
            f"{path.name!r} expands {ratio:,.0f}:1 ({declared / _MIB:,.1f} MiB from "
            f"{size:,} bytes), over the limit of {limits.max_compression_ratio:g}:1 "
            "(limits.max_compression_ratio)",
            path=str(path),
        )
    packed = sum(m.compress_size for m in members)
    if packed > size:
        raise ZipBombError(
            f"{path.name!r} has overlapping archive members ({packed:,} compressed bytes "
            f"listed in a {size:,}-byte file)",
            path=str(path),
        )
    if kind in _OOXML_TYPES and not any(m.filename == "[Content_Types].xml" for m in members):
        raise TypeMismatchError(
            f"{path.name!r} is a ZIP file but not an Office Open XML package "
            "(no [Content_Types].xml)",
            path=str(path),
        )


_TEXT_BOMS = (
    codecs.BOM_UTF8,
    codecs.BOM_UTF32_LE,
    codecs.BOM_UTF32_BE,
    codecs.BOM_UTF16_LE,
    codecs.BOM_UTF16_BE,
)
_CONTROL_BYTES = frozenset(range(32)) - {9, 10, 12, 13, 27} | {127}


def _looks_binary(head: bytes) -> bool:
    """Whether the first bytes of a supposed text file are binary data.

    Text is: a Unicode BOM; UTF-16/32 without a BOM (NULs on a regular stride);
    otherwise no NUL byte (git's rule) and few control characters.
    """
    if not head or head.startswith(_TEXT_BOMS):
        return False
    if 0 in head:
        return not _wide_text(head)
    controls = sum(1 for b in head if b in _CONTROL_BYTES)
    return controls > len(head) // 20


def _wide_text(head: bytes) -> bool:
    """BOM-less UTF-16/32 text: decodes, and is mostly printable once decoded."""
    for encoding, unit in (("utf-32-le", 4), ("utf-32-be", 4), ("utf-16-le", 2), ("utf-16-be", 2)):
        sample = head[: len(head) - len(head) % unit]
        try:
            text = sample.decode(encoding)
        except UnicodeDecodeError:
            continue
        printable = sum(1 for ch in text if ch.isprintable() or ch in "\t\n\r")
        if text and printable >= 0.95 * len(text):
            return True
    return False
