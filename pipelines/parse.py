"""Parse stage: one file in, a :class:`ParsedDocument` (text plus structural elements) out.

Each supported extension goes to its own ``unstructured.partition.<type>``
function, imported lazily on first use (importing them all costs seconds).
Everything runs offline: PDFs use the ``fast`` (pdfminer) strategy only — no
OCR, no layout models — and unstructured's text classifier uses the local
stand-in from :mod:`pipelines.offline_nlp` when spaCy's model is absent.

A failure is a :class:`~pipelines.errors.ParseError` whose reason a person can
act on. A non-empty file that parses to no text is a failure, never an empty
success: unstructured's fast PDF path, for one, returns nothing without raising.

Output shape: element texts (normalised, stripped; empty ones and page breaks
dropped) joined by :data:`~pipelines.models.ELEMENT_SEPARATOR`, each element
knowing its exact span, so ``doc.text[e.char_start:e.char_end] == e.text``.

Title, first found: the title the document declares (Markdown front matter
``title``, HTML ``<title>``, e-mail subject); the first element when it is a
``Title``; the caller's ``title``; the file name without its extension.

Per format: Markdown loses its YAML front matter and Jekyll/Liquid block tags on
lines of their own (``{% alert %}``); text formats are decoded by
:func:`decode_text_bytes`. E-mails (eml/msg) give the body text, preceded by a
``Title`` element with the subject and an ``EmailHeader`` element (our category,
not unstructured's) with From/To/Date read from the message; attachments are not
processed, and encrypted messages are refused.

Usage::

    from pipelines.parse import parse_file

    doc = parse_file(Path("handbook.pdf"), doc_id="docs:handbook.pdf", version="abc123")
    doc.elements[0].page  # 1
"""

from __future__ import annotations

import codecs
import dataclasses
import html
import importlib
import io
import re
import threading
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from connectors.models import SourceDocument
from core.formats import IMAGE_TYPES, SUPPORTED_TYPES
from pipelines.config import LimitsConfig
from pipelines.errors import (
    EmptyDocumentError,
    EncryptedDocumentError,
    LimitExceededError,
    ParseError,
    TooManyPagesError,
    TypeMismatchError,
    UnsupportedFormatError,
)
from pipelines.local_file import private_copy
from pipelines.models import ELEMENT_SEPARATOR, ParsedDocument, ParsedElement
from pipelines.ocr import (
    MIN_TEXT_CHARS,
    OcrBudget,
    OcrPage,
    OcrSettings,
    can_ocr,
    ocr_image,
    ocr_pdf_pages,
)
from pipelines.offline_nlp import install_offline_nlp

InputKind = Literal["path", "text", "utf8_bytes"]


@dataclass(frozen=True)
class _Format:
    """How to hand one file type to unstructured.

    ``input`` is ``path`` for binary containers, ``text`` when we decode the
    file ourselves and pass ``text=`` (so encoding detection, NUL removal and
    front matter are under our control), ``utf8_bytes`` for partitioners that
    take no ``text=`` (CSV/TSV): the decoded text re-encoded as UTF-8.
    """

    label: str
    module: str
    function: str
    input: InputKind
    kwargs: Mapping[str, Any] = field(default_factory=dict)


_PDF_KWARGS: Mapping[str, Any] = {
    # pdfminer text only: hi_res, OCR, table inference and image extraction all
    # need hub models or system tools and must never be picked by default.
    "strategy": "fast",
    "infer_table_structure": False,
    "extract_images_in_pdf": False,
}
_NO_ATTACHMENTS: Mapping[str, Any] = {"process_attachments": False}

# One reader per extension core.formats.SUPPORTED_TYPES names (what connectors hand over);
# tests/connectors/test_formats.py holds the two to the same list.
_FORMATS: dict[str, _Format] = {
    "pdf": _Format("PDF", "unstructured.partition.pdf", "partition_pdf", "path", _PDF_KWARGS),
    "docx": _Format("DOCX", "unstructured.partition.docx", "partition_docx", "path"),
    "pptx": _Format("PPTX", "unstructured.partition.pptx", "partition_pptx", "path"),
    "xlsx": _Format("XLSX", "unstructured.partition.xlsx", "partition_xlsx", "path"),
    "odt": _Format("ODT", "unstructured.partition.odt", "partition_odt", "path"),
    "rtf": _Format("RTF", "unstructured.partition.rtf", "partition_rtf", "path"),
    "epub": _Format("EPUB", "unstructured.partition.epub", "partition_epub", "path"),
    "eml": _Format(
        "e-mail", "unstructured.partition.email", "partition_email", "path", _NO_ATTACHMENTS
    ),
    "msg": _Format(
        "Outlook message", "unstructured.partition.msg", "partition_msg", "path", _NO_ATTACHMENTS
    ),
    "html": _Format("HTML", "unstructured.partition.html", "partition_html", "text"),
    "htm": _Format("HTML", "unstructured.partition.html", "partition_html", "text"),
    "md": _Format("Markdown", "unstructured.partition.md", "partition_md", "text"),
    "markdown": _Format("Markdown", "unstructured.partition.md", "partition_md", "text"),
    "txt": _Format("text", "unstructured.partition.text", "partition_text", "text"),
    "text": _Format("text", "unstructured.partition.text", "partition_text", "text"),
    "xml": _Format("XML", "unstructured.partition.xml", "partition_xml", "text"),
    "csv": _Format(
        "CSV", "unstructured.partition.csv", "partition_csv", "utf8_bytes", {"encoding": "utf-8"}
    ),
    "tsv": _Format("TSV", "unstructured.partition.tsv", "partition_tsv", "utf8_bytes"),
    # Images are read by OCR (pipelines.ocr), not by unstructured.
    **{kind: _Format("image", "pipelines.ocr", "ocr_image", "path") for kind in IMAGE_TYPES},
}

DEFAULT_LANGUAGES: tuple[str, ...] = ("eng",)
"""The languages declared to unstructured for every document (ISO 639-3 codes).

Declaring them skips unstructured's per-document language detection (``langdetect``
over the whole text, 43% of parse time on the 18F handbook). unstructured only
writes the result to ``metadata.languages``, which Trove does not keep: the text,
element types, spans, pages and headings are the same either way (its text-type
rules assume English unless told otherwise, detected or not). ``("auto",)``
restores detection. PDFs always got ``["eng"]`` (unstructured's own default for them).
"""

_ZIP_TYPES = frozenset({"docx", "pptx", "xlsx", "odt", "epub"})
_OOXML_TYPES = frozenset({"docx", "pptx", "xlsx"})
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HEAD_BYTES = 8192
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
_IMAGE_MAGIC: dict[str, tuple[bytes, ...]] = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpg": (b"\xff\xd8\xff",),
    "jpeg": (b"\xff\xd8\xff",),
    "tif": _TIFF_MAGIC,
    "tiff": _TIFF_MAGIC,
    "bmp": (b"BM",),
    "webp": (b"RIFF",),
}

# Control characters break tokenisers and JSON consumers; newline and tab carry layout.
# These are all of them (Unicode category Cc: U+0000-U+001F and U+007F-U+009F, a set
# Unicode never changes) but newline and tab.
_DROPPED_CONTROLS_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# libyaml's safe loader when PyYAML was built with it: the same documents for far less
# CPU (the pure-Python loader was a visible share of parsing Markdown:
# docs/benchmarks.md#why-the-ingest-pipeline-is-built-this-way).
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FRONT_MATTER_RE = re.compile(
    r"\A(?:\ufeff)?---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S
)
# Jekyll/Eleventy block tags on a line of their own ({% alert %}, {% endalert %}):
# template markup, not content.
_LIQUID_LINE_RE = re.compile(r"^[ \t]*\{%.*?%\}[ \t]*$", re.M)
_HTML_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.I | re.S)
_MAX_TITLE_CHARS = 300


def parse_document(doc: SourceDocument) -> ParsedDocument:
    """Parse a connector's document from ``doc.local_path``, if still the file scanned.

    :raises ParseError: when the document has no local copy, changed since the scan
        (``changed_during_sync``) or cannot be parsed.
    """
    if doc.local_path is None:
        raise ParseError(f"document {doc.doc_id!r} has no local file to parse", path=doc.path)
    # Read through a descriptor checked against the scan (see pipelines.local_file).
    with private_copy(doc.local_path, doc.identity) as copy:
        return parse_file(
            copy,
            doc_id=doc.doc_id,
            version=doc.version,
            doc_type=doc.doc_type or None,
            title=doc.title or None,
        )


def parse_file(
    path: Path,
    *,
    doc_id: str,
    version: str,
    doc_type: str | None = None,
    title: str | None = None,
    max_chars: int | None = None,
    max_line_chars: int | None = None,
    languages: Sequence[str] = DEFAULT_LANGUAGES,
    ocr: OcrSettings | None = None,
    limits: LimitsConfig | None = None,
) -> ParsedDocument:
    """Parse one file into text and elements; scanned PDF pages and images through OCR.

    :param doc_type: the extension to parse as (default: the file's own suffix).
    :param title: a fallback title when the document neither declares one nor opens
        with a heading (the connector's title; the file name otherwise).
    :param max_chars: plain-text formats (txt, md, csv, tsv) whose decoded text is
        longer are refused before partitioning, which is slow on huge inputs.
    :param max_line_chars: lines of txt/md longer than this are hard-wrapped.
    :param languages: passed to unstructured (see :data:`DEFAULT_LANGUAGES`);
        ``("auto",)`` detects them per document.
    :param ocr: the source's OCR mode and languages (default ``auto``, English);
        see :mod:`pipelines.ocr`.
    :param limits: the OCR limits (pixels, pages, seconds) and ``max_pages``;
        default :class:`~trove.config.LimitsConfig`'s.
    :raises ParseError: unsupported type, unreadable, empty or whitespace-only file,
        encrypted or malformed content, a parse that produced no text, or an OCR
        refusal (``needs_ocr``, ``decompression_bomb``, ``too_many_pages``,
        ``ocr_timeout``).
    """
    path = Path(path)
    kind = check_file(path, doc_type)
    fmt = _FORMATS[kind]
    ocr = ocr or OcrSettings()
    limits = limits or LimitsConfig()
    if kind in IMAGE_TYPES:
        return _parse_image(path, doc_id, version, title, ocr, limits)
    pdf_pages = _pdf_page_sizes(path, limits) if kind == "pdf" else None

    declared_title: str | None = None
    prefix: list[ParsedElement] = []
    call_kwargs = dict(fmt.kwargs)
    # A fresh list per call: unstructured rewrites the codes in place.
    call_kwargs["languages"] = list(languages)
    if fmt.input == "path":
        call_kwargs["filename"] = str(path)
    else:
        text, declared_title = _prepare_text(path, kind, fmt, max_chars, max_line_chars)
        if fmt.input == "text":
            call_kwargs["text"] = text
        else:
            call_kwargs["file"] = io.BytesIO(text.encode("utf-8"))

    if kind in ("eml", "msg"):
        header = _email_header(path, kind)
        declared_title = header.subject
        prefix = header.elements()

    raw_elements = _partition(path, fmt, call_kwargs)
    elements = prefix + [e for e in (_convert(el) for el in raw_elements) if e is not None]
    ocr_done = _NO_OCR
    if pdf_pages:
        elements, ocr_done = _pdf_with_ocr(path, elements, pdf_pages, ocr, limits)
    if len(elements) == len(prefix):
        reason, reason_class = _empty_reason(path, kind, fmt)
        raise ParseError(reason, path=str(path), reason_class=reason_class)

    parsed_elements, joined = _layout(elements)
    chosen = _choose_title(declared_title, parsed_elements, title, path)
    return ParsedDocument(
        doc_id=doc_id,
        version=version,
        title=chosen,
        text=joined,
        elements=parsed_elements,
        ocr_pages=ocr_done.pages,
        ocr_pages_skipped=ocr_done.skipped,
        ocr_seconds=ocr_done.seconds,
    )


# ---------------------------------------------------------------- OCR (pipelines.ocr)


@dataclass(frozen=True)
class _OcrDone:
    pages: int = 0
    skipped: int = 0  # pages without text that OCR could not read (off, not installed)
    seconds: float = 0.0


_NO_OCR = _OcrDone()


def _ocr_budget(pages: int, limits: LimitsConfig) -> OcrBudget:
    """Per-page seconds, scaled by the pages to read, capped by the per-document total."""
    return OcrBudget(min(limits.ocr_timeout_s, limits.ocr_page_timeout_s * max(pages, 1)))


def _parse_image(
    path: Path,
    doc_id: str,
    version: str,
    title: str | None,
    ocr: OcrSettings,
    limits: LimitsConfig,
) -> ParsedDocument:
    budget = _ocr_budget(1, limits)
    pages = ocr_image(path, ocr, limits, budget)
    elements = [e for page in pages for e in _ocr_elements(page)]
    if not elements:
        raise EmptyDocumentError(
            f"OCR found no text in image {path.name!r} ({len(pages)} page(s))", path=str(path)
        )
    parsed_elements, joined = _layout(elements)
    return ParsedDocument(
        doc_id=doc_id,
        version=version,
        title=_clean_title(title) or path.stem or path.name,
        text=joined,
        elements=parsed_elements,
        ocr_pages=budget.pages,
        ocr_seconds=budget.seconds,
    )


def _pdf_page_sizes(path: Path, limits: LimitsConfig) -> dict[int, tuple[float, float]] | None:
    """Each page's size in points, read before anything is rendered (None: pypdf cannot tell).

    A PDF with more pages than ``limits.max_pages`` is refused here, before pdfminer
    reads them all.
    """
    from pypdf import PdfReader

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            return None  # pdfminer's parse reports it
        count = len(reader.pages)
        if count > limits.max_pages:
            raise TooManyPagesError(
                f"PDF {path.name!r} has {count:,} pages, over the limit of {limits.max_pages:,} "
                "(limits.max_pages)",
                path=str(path),
            )
        sizes: dict[int, tuple[float, float]] = {}
        for number, page in enumerate(reader.pages, start=1):
            box = page.mediabox
            sizes[number] = (abs(float(box.width)), abs(float(box.height)))
        return sizes
    except ParseError:
        raise
    except Exception:  # damaged in a way pypdf minds: the fast path decides alone, as before
        return None


def _pdf_with_ocr(
    path: Path,
    elements: list[ParsedElement],
    sizes: dict[int, tuple[float, float]],
    ocr: OcrSettings,
    limits: LimitsConfig,
) -> tuple[list[ParsedElement], _OcrDone]:
    """The PDF's elements with its text-less pages OCR'd, in page order (see pipelines.ocr)."""
    visible: dict[int, int] = {}
    for element in elements:
        if element.page is not None:
            shown = len("".join(element.text.split()))
            visible[element.page] = visible.get(element.page, 0) + shown
    if ocr.mode == "always":
        targets = sorted(sizes)
    else:
        targets = [p for p in sorted(sizes) if visible.get(p, 0) < MIN_TEXT_CHARS]
    if not targets:
        return elements, _NO_OCR
    has_text = any(visible.get(p, 0) for p in sizes if p not in targets)
    if not can_ocr(ocr, pdf=True) and has_text:
        # A mixed PDF without OCR: its text pages are indexed; the others are counted.
        return elements, _OcrDone(skipped=len(targets))
    budget = _ocr_budget(len(targets), limits)
    read = {
        page.page: _ocr_elements(page)
        for page in ocr_pdf_pages(path, targets, sizes, ocr, limits, budget)
    }
    merged: list[ParsedElement] = []
    for page in sorted({*sizes, *(e.page for e in elements if e.page is not None)}):
        if page in read:
            merged.extend(read[page])
        else:
            merged.extend(e for e in elements if e.page == page)
    merged.extend(e for e in elements if e.page is None)
    return merged, _OcrDone(pages=budget.pages, seconds=budget.seconds)


def _ocr_elements(page: OcrPage) -> list[ParsedElement]:
    """One page's OCR'd text as elements (unstructured's text classification), with its page."""
    text = normalise_text(page.text)
    if not text.strip():
        return []
    fmt = _FORMATS["txt"]
    raw = _partition(Path(f"page-{page.page}.txt"), fmt, {"text": text, "languages": ["eng"]})
    out: list[ParsedElement] = []
    for element in raw:
        converted = _convert(element)
        if converted is not None:
            out.append(dataclasses.replace(converted, page=page.page))
    return out


_PLAIN_KINDS = frozenset({"txt", "text", "md", "markdown", "csv", "tsv"})
_WRAPPED_KINDS = frozenset({"txt", "text", "md", "markdown"})


def _prepare_text(
    path: Path,
    kind: str,
    fmt: _Format,
    max_chars: int | None = None,
    max_line_chars: int | None = None,
) -> tuple[str, str | None]:
    """Decoded, normalised text for a text format, and the title it declares (if any)."""
    text = _decode_text(path, fmt)
    if max_chars is not None and kind in _PLAIN_KINDS and len(text) > max_chars:
        raise LimitExceededError(
            f"{fmt.label} file {path.name!r} has {len(text):,} characters, over the limit of "
            f"{max_chars:,} (limits.max_chars)",
            path=str(path),
        )
    if max_line_chars is not None and kind in _WRAPPED_KINDS:
        text = _wrap_long_lines(text, max_line_chars)
    declared_title: str | None = None
    had_front_matter = False
    if kind in ("md", "markdown"):
        had_front_matter = _FRONT_MATTER_RE.match(text) is not None
        text, declared_title = _split_front_matter(text)
        text = _LIQUID_LINE_RE.sub("", text)
    elif kind in ("html", "htm"):
        declared_title = _html_title(text)
    if not text.strip():
        where = " after its front matter" if had_front_matter else ""
        raise EmptyDocumentError(
            f"{fmt.label} file {path.name!r} has no content{where}", path=str(path)
        )
    return text, declared_title


def _wrap_long_lines(text: str, width: int) -> str:
    """Hard-wrap lines longer than ``width``: unstructured's regexes are slow on them."""
    lines = text.split("\n")
    if all(len(line) <= width for line in lines):
        return text
    out: list[str] = []
    for line in lines:
        if len(line) <= width:
            out.append(line)
        else:
            out.extend(line[i : i + width] for i in range(0, len(line), width))
    return "\n".join(out)


# ---------------------------------------------------------------- checks before parsing


def check_file(path: Path, doc_type: str | None = None) -> str:
    """The cheap checks :func:`parse_file` makes before parsing; returns the type parsed as.

    Supported type, readable, not empty or whitespace-only, and a container that
    matches the extension (a ``%PDF-`` header, a ZIP for OOXML, not an encrypted
    OLE wrapper). :mod:`pipelines.guard` runs them too, before its own checks.

    :raises ParseError: with the reason class (unsupported, empty, type_mismatch,
        encrypted, malformed).
    """
    path = Path(path)
    kind = _normalise_type(doc_type if doc_type else path.suffix)
    fmt = _FORMATS.get(kind)
    if fmt is None:
        shown = f".{kind}" if kind else "(no extension)"
        raise UnsupportedFormatError(
            f"unsupported file type {shown} for {path.name!r}; supported: "
            + ", ".join(sorted(SUPPORTED_TYPES)),
            path=str(path),
        )
    size, head = _read_head(path)
    _check_not_blank(path, size, head)
    _check_container(path, kind, fmt, head)
    return kind


def _normalise_type(raw: str) -> str:
    return raw.strip().lower().lstrip(".")


def _read_head(path: Path) -> tuple[int, bytes]:
    if path.is_dir():
        raise ParseError(f"{path.name!r} is a directory, not a file", path=str(path))
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError as exc:
        raise ParseError(
            f"cannot read {path.name!r}: {exc.strerror or exc}", path=str(path)
        ) from exc
    return size, head


def _check_not_blank(path: Path, size: int, head: bytes) -> None:
    if size == 0:
        raise EmptyDocumentError(f"file {path.name!r} is empty (0 bytes)", path=str(path))
    if size <= len(head) and not _without_boms(head).strip():
        raise EmptyDocumentError(
            f"file {path.name!r} contains only whitespace ({size} bytes)", path=str(path)
        )


def _without_boms(data: bytes) -> bytes:
    for bom in (
        b"\xef\xbb\xbf",
        b"\xff\xfe\x00\x00",
        b"\x00\x00\xfe\xff",
        b"\xff\xfe",
        b"\xfe\xff",
    ):
        if data.startswith(bom):
            # UTF-16/32 whitespace is ASCII whitespace padded with NULs.
            return data[len(bom) :].replace(b"\x00", b"")
    return data


def _check_container(path: Path, kind: str, fmt: _Format, head: bytes) -> None:
    """Cheap signature checks that turn library stack traces into plain reasons."""
    if kind == "pdf":
        if b"%PDF-" not in head[:1024]:
            raise TypeMismatchError(
                f"{path.name!r} is not a PDF (no %PDF- header in the first 1024 bytes)",
                path=str(path),
            )
        return
    if kind in IMAGE_TYPES:
        if not any(head.startswith(magic) for magic in _IMAGE_MAGIC[kind]) or (
            kind == "webp" and head[8:12] != b"WEBP"
        ):
            raise TypeMismatchError(
                f"{path.name!r} is not a {kind.upper()} image (its first bytes say otherwise)",
                path=str(path),
            )
        return
    if kind in _OOXML_TYPES and head.startswith(_OLE_MAGIC):
        reason, reason_class = _ole_reason(path, fmt)
        raise ParseError(reason, path=str(path), reason_class=reason_class)
    if kind in _ZIP_TYPES and not zipfile.is_zipfile(path):
        raise TypeMismatchError(
            f"{path.name!r} is not a valid {fmt.label} file (not a ZIP container)",
            path=str(path),
        )


def _ole_reason(path: Path, fmt: _Format) -> tuple[str, str]:
    """Why an OOXML-named file is an OLE compound file, and the reason class."""
    # Office stores password-protected OOXML inside an OLE compound file.
    try:
        import msoffcrypto

        with path.open("rb") as fh:
            encrypted = msoffcrypto.OfficeFile(fh).is_encrypted()
    except Exception as exc:  # not decidable: say what we know
        return (
            f"{path.name!r} is an OLE compound file, not {fmt.label}: either password-protected "
            f"or a legacy Office format with the wrong extension ({type(exc).__name__})"
        ), "type_mismatch"
    if encrypted:
        return f"{fmt.label} file {path.name!r} is password-protected (encrypted)", "encrypted"
    return f"{path.name!r} is a legacy Office (OLE) file named .{fmt.label.lower()}", (
        "type_mismatch"
    )


# ---------------------------------------------------------------- text decoding


_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian BOM starts with UTF-16's.
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_DECLARED_CHARSET_RE = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)|<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""",
    re.I,
)
# Single-byte Western/Central European code pages that statistical detection confuses
# with one another on short texts; like browsers, we prefer windows-1252 among them.
_LATIN_CODEPAGES = re.compile(r"^(cp125[0-8]|windows-125[0-8]|iso8859_\d+|latin_\d|mac_\w+)$")


def _decode_text(path: Path, fmt: _Format) -> str:
    """Read and decode a text file, then normalise it (see :func:`decode_text_bytes`)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(
            f"cannot read {path.name!r}: {exc.strerror or exc}", path=str(path)
        ) from exc
    try:
        text = decode_text_bytes(data)
    except ValueError as exc:
        raise ParseError(
            f"cannot decode {fmt.label} file {path.name!r}: {exc}", path=str(path)
        ) from exc
    return normalise_text(text)


def decode_text_bytes(data: bytes) -> str:
    """Decode text deterministically: BOM, else UTF-8, else a declared charset, else detection.

    UTF-8 is tried first because valid UTF-8 is very unlikely by accident; a charset
    declared in an HTML ``<meta>`` or XML declaration comes next; then
    charset-normalizer's guess, with windows-1252 preferred among look-alike Latin code
    pages when it fits the bytes as well as the detector's pick (on short Western texts the
    detector can pick windows-1250 and turn "très" into "trčs").

    :raises ValueError: when no encoding decodes the bytes.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise ValueError(f"invalid {encoding} after its byte-order mark: {exc}") from exc
    sample = data[:4096]
    wide = sample.count(0) > len(sample) // 5  # BOM-less UTF-16/32 pads ASCII with NULs
    if not wide:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        declared = _DECLARED_CHARSET_RE.search(data[:2048])
        if declared is not None:
            name = (declared.group(1) or declared.group(2)).decode("ascii").lower()
            try:
                return data.decode(name)
            except (LookupError, UnicodeDecodeError):
                pass  # a wrong or unknown declaration: fall through to detection
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None or best.encoding is None:
        raise ValueError("unknown text encoding (not UTF-8/16/32, nothing declared or detected)")
    if _LATIN_CODEPAGES.match(best.encoding):
        for match in matches:
            if match.encoding == "cp1252" and match.chaos <= best.chaos:
                return str(match)
    return str(best)


def normalise_text(text: str) -> str:
    """Unify line ends and drop control characters (NUL included) except newline and tab."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    if text.isprintable():
        return text
    return _DROPPED_CONTROLS_RE.sub("", text)


def _split_front_matter(text: str) -> tuple[str, str | None]:
    """Remove YAML front matter; return the body and its ``title`` (if a non-empty string)."""
    match = _FRONT_MATTER_RE.match(text)
    if match is None:
        return text, None
    body = text[match.end() :]
    try:
        meta = yaml.load(match.group(1), Loader=_YAML_LOADER)
    except yaml.YAMLError:
        # Still front matter by shape, so it is stripped; it just declares no title we can read.
        return body, None
    title = meta.get("title") if isinstance(meta, dict) else None
    return body, _clean_title(title) if isinstance(title, str) else None


def _html_title(text: str) -> str | None:
    match = _HTML_TITLE_RE.search(text)
    return _clean_title(html.unescape(match.group(1))) if match else None


# ---------------------------------------------------------------- e-mail header


@dataclass(frozen=True)
class _EmailHeader:
    subject: str | None
    sender: str | None
    to: str | None
    date: str | None

    def elements(self) -> list[ParsedElement]:
        out: list[ParsedElement] = []
        if self.subject:
            out.append(ParsedElement("Title", self.subject, 0, 0, heading_level=1))
        lines = [
            f"{label}: {value}"
            for label, value in (("From", self.sender), ("To", self.to), ("Date", self.date))
            if value
        ]
        if lines:
            out.append(ParsedElement("EmailHeader", "\n".join(lines), 0, 0))
        return out


def _email_header(path: Path, kind: str) -> _EmailHeader:
    """Subject, sender, recipients and sent date, read from the message itself.

    Read here rather than from unstructured's metadata, which falls back to the
    file's mtime for the date and would make the text depend on where the file sat.
    Encrypted messages are refused: their body is ciphertext.
    """
    if kind == "eml":
        with path.open("rb") as fh:
            msg = BytesHeaderParser().parse(fh)
        content_type = (msg.get_content_type() or "").lower()
        if content_type == "multipart/encrypted" or "pkcs7-mime" in content_type:
            raise EncryptedDocumentError(
                f"e-mail {path.name!r} is encrypted ({content_type}); its body cannot be read",
                path=str(path),
            )
        date = None
        if raw_date := msg.get("Date"):
            try:
                date = parsedate_to_datetime(str(raw_date)).isoformat()
            except (TypeError, ValueError):
                date = str(raw_date).strip() or None
        return _EmailHeader(
            subject=_clean_title(str(msg.get("Subject") or "")),
            sender=_one_line(msg.get("From")),
            to=_one_line(msg.get("To")),
            date=date,
        )
    from oxmsg import Message

    try:
        outlook = Message.load(str(path))
    except Exception as exc:
        raise ParseError(
            f"{path.name!r} is not a readable Outlook message: {type(exc).__name__}: {exc}",
            path=str(path),
        ) from exc
    if "encrypted" in outlook.message_headers.get("Content-Type", "").lower():
        raise EncryptedDocumentError(f"Outlook message {path.name!r} is encrypted", path=str(path))
    recipients = ", ".join(r.email_address for r in outlook.recipients if r.email_address)
    return _EmailHeader(
        subject=_clean_title(outlook.subject or ""),
        sender=_one_line(outlook.sender),
        to=recipients or None,
        date=outlook.sent_date.isoformat() if outlook.sent_date else None,
    )


def _one_line(value: object) -> str | None:
    text = " ".join(str(value).split()) if value else ""
    return text or None


# ---------------------------------------------------------------- partitioning


_partitioner_lock = threading.Lock()
_partitioners: dict[tuple[str, str], Callable[..., list[Any]]] = {}


def _partitioner(fmt: _Format) -> Callable[..., list[Any]]:
    """The partition function for ``fmt``, imported once per process."""
    key = (fmt.module, fmt.function)
    func = _partitioners.get(key)
    if func is None:
        with _partitioner_lock:
            install_offline_nlp()
            func = getattr(importlib.import_module(fmt.module), fmt.function)
            _partitioners[key] = func
    return func


def _partition(path: Path, fmt: _Format, kwargs: dict[str, Any]) -> list[Any]:
    try:
        return list(_partitioner(fmt)(**kwargs))
    except ParseError:
        raise
    except ImportError as exc:  # an optional extra (pandoc, openpyxl...) is not installed
        raise ParseError(
            f"cannot parse {fmt.label} file {path.name!r}: missing dependency ({exc})",
            path=str(path),
            reason_class="unsupported",
        ) from exc
    except Exception as exc:  # the library's many error types all mean "malformed" here
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        reason = f"malformed {fmt.label} file {path.name!r}: {type(exc).__name__}"
        raise ParseError(f"{reason}: {detail}" if detail else reason, path=str(path)) from exc


def _empty_reason(path: Path, kind: str, fmt: _Format) -> tuple[str, str]:
    """Why a parse gave no text, and the reason class."""
    if kind == "pdf":
        return _pdf_empty_reason(path)
    if kind in ("eml", "msg"):
        return (
            f"{fmt.label} {path.name!r} has no body text (attachments are not processed)",
            "empty",
        )
    return f"{fmt.label} file {path.name!r} parsed to no text", "empty"


def _pdf_empty_reason(path: Path) -> tuple[str, str]:
    """Why pdfminer found no text: damage, a password, or pages that are only images."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            return f"PDF {path.name!r} is password-protected (encrypted)", "encrypted"
        pages = len(reader.pages)
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        return f"malformed PDF {path.name!r}: {type(exc).__name__}: {exc}", "malformed"
    if pages == 0:
        return f"PDF {path.name!r} has no pages", "empty"
    return (
        f"PDF {path.name!r} has {pages} page(s) but no extractable text, and OCR found none either"
    ), "empty"


def _convert(element: Any) -> ParsedElement | None:
    """One unstructured element as a ParsedElement with a placeholder span, or None to drop."""
    category = str(getattr(element, "category", "") or type(element).__name__)
    if category == "PageBreak":
        return None
    text = normalise_text(str(element.text or "")).strip()
    if not text:
        return None
    metadata = element.metadata
    page = metadata.page_number if isinstance(metadata.page_number, int) else None
    level = None
    depth = metadata.category_depth
    if category == "Title" and isinstance(depth, int) and depth >= 0:
        level = depth + 1
    return ParsedElement(category, text, 0, 0, page=page, heading_level=level)


def _layout(elements: list[ParsedElement]) -> tuple[tuple[ParsedElement, ...], str]:
    """Join element texts with the separator and give each element its exact span."""
    parts: list[str] = []
    placed: list[ParsedElement] = []
    cursor = 0
    for element in elements:
        if parts:
            cursor += len(ELEMENT_SEPARATOR)
        end = cursor + len(element.text)
        placed.append(
            ParsedElement(
                category=element.category,
                text=element.text,
                char_start=cursor,
                char_end=end,
                page=element.page,
                heading_level=element.heading_level,
            )
        )
        parts.append(element.text)
        cursor = end
    return tuple(placed), ELEMENT_SEPARATOR.join(parts)


# ---------------------------------------------------------------- title


def _clean_title(value: str | None) -> str | None:
    if not value:
        return None
    text = " ".join(normalise_text(value).split())
    return text[:_MAX_TITLE_CHARS] or None


def _choose_title(
    declared: str | None,
    elements: tuple[ParsedElement, ...],
    fallback: str | None,
    path: Path,
) -> str:
    if declared:
        return declared
    if elements and elements[0].category == "Title" and (first := _clean_title(elements[0].text)):
        return first
    return _clean_title(fallback) or path.stem or path.name
