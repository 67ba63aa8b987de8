"""Generators of hostile documents, and hostile parse functions for the worker tests.

Each ``make_*`` writes one file into ``directory`` and returns its path; all are
built in well under a second or two and stay small on disk (the zip bombs are a
few hundred KB, or lie in their central directory).

The ``*_parse`` functions at the bottom are targets for
:class:`pipelines.parse_worker.ParseWorker` (``"tests.pipelines.hostile_files:slow_parse"``):
they run inside the worker process and misbehave on purpose.
"""

from __future__ import annotations

import io
import os
import struct
import time
import zipfile
from pathlib import Path
from typing import Any

from docx import Document

from pipelines.models import ParsedDocument
from pipelines.parse import parse_file

# ---------------------------------------------------------------- good files


def make_docx(directory: Path, name: str = "good.docx", text: str = "A plain paragraph.") -> Path:
    doc = Document()
    doc.add_heading("Quarterly report", level=1)
    doc.add_paragraph(text)
    path = directory / name
    doc.save(str(path))
    return path


def make_pdf(directory: Path, name: str = "good.pdf", text: str = "Hello from a PDF page.") -> Path:
    from reportlab.pdfgen import canvas

    path = directory / name
    pdf = canvas.Canvas(str(path))
    pdf.drawString(72, 720, text)
    pdf.showPage()
    pdf.save()
    return path


def make_text(directory: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = directory / name
    path.write_bytes(text.encode(encoding))
    return path


def make_utf16_text(directory: Path) -> Path:
    # Python's "utf-16" codec writes a BOM, as Windows Notepad does.
    return make_text(directory, "utf16.txt", "Grüße aus Köln.\nSecond line.\n", "utf-16")


def make_cp1252_text(directory: Path) -> Path:
    return make_text(directory, "cp1252.txt", "Très bien, café crème – “quoted”.\n", "cp1252")


# ---------------------------------------------------------------- zip bombs


def make_zip_bomb_docx(directory: Path, uncompressed_mb: int = 200) -> Path:
    """A real DOCX-shaped zip with one member of ``uncompressed_mb`` MB of zeros (~1000:1).

    Built by streaming 1 MB blocks so memory stays small; ~1 s for 200 MB at level 1.
    """
    path = directory / "bomb.docx"
    block = bytes(1024 * 1024)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        with zf.open("word/document.xml", "w", force_zip64=True) as member:
            for _ in range(uncompressed_mb):
                member.write(block)
    return path


def make_lying_zip_docx(directory: Path, declared_bytes: int = 50 * 1024**3) -> Path:
    """A tiny DOCX whose central directory declares ``declared_bytes`` uncompressed.

    The bytes on disk are a normal small document: only the directory lies, which is
    what a guard reading the directory alone must still refuse.
    """
    good = make_docx(directory, "lying-src.docx")
    data = bytearray(good.read_bytes())
    good.unlink()
    # Patch the uncompressed size of the first central-directory entry (zip32 field).
    declared = min(declared_bytes, 0xFFFFFFFE)
    offset = data.rfind(b"PK\x01\x02")
    first = data.find(b"PK\x01\x02")
    assert first != -1 and offset != -1
    struct.pack_into("<I", data, first + 24, declared)
    path = directory / "lying.docx"
    path.write_bytes(bytes(data))
    return path


def make_many_members_docx(directory: Path, members: int) -> Path:
    path = directory / "many.docx"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        for i in range(members):
            zf.writestr(f"word/m{i}.xml", b"x")
    return path


def make_zip_named_docx(directory: Path) -> Path:
    """A valid zip that is not an OOXML package (no ``[Content_Types].xml``)."""
    path = directory / "plainzip.docx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "just a zip")
    return path


# ---------------------------------------------------------------- encrypted


def make_encrypted_pdf(directory: Path, user_password: str = "secret") -> Path:
    from pypdf import PdfReader, PdfWriter

    source = make_pdf(directory, "plain-for-encryption.pdf", "Confidential numbers.")
    writer = PdfWriter()
    for page in PdfReader(str(source)).pages:
        writer.add_page(page)
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="AES-128")
    source.unlink()
    path = directory / ("encrypted.pdf" if user_password else "owner-only.pdf")
    with path.open("wb") as fh:
        writer.write(fh)
    return path


def make_encrypted_docx(directory: Path) -> Path:
    """A password-protected DOCX: Office wraps the encrypted package in an OLE file."""
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = make_docx(directory, "plain-for-encryption.docx")
    out = io.BytesIO()
    with plain.open("rb") as fh:
        OOXMLFile(fh).encrypt("secret", out)
    plain.unlink()
    path = directory / "encrypted.docx"
    path.write_bytes(out.getvalue())
    return path


# ---------------------------------------------------------------- malformed / mismatched


def make_truncated_pdf(directory: Path) -> Path:
    data = make_pdf(directory, "whole.pdf", "This text is cut off mid-file.").read_bytes()
    (directory / "whole.pdf").unlink()
    path = directory / "truncated.pdf"
    path.write_bytes(data[: len(data) // 3])
    return path


def make_noise(directory: Path, name: str, size: int = 64 * 1024, seed: int = 7) -> Path:
    """Random bytes under a document's name (``noise.pdf``, ``noise.html``...)."""
    import random

    path = directory / name
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def make_nested_html(directory: Path, depth: int = 5_000) -> Path:
    body = "<div>" * depth + "deep text inside" + "</div>" * depth
    return make_text(directory, "nested.html", f"<html><body>{body}</body></html>")


def make_empty(directory: Path, name: str = "empty.txt") -> Path:
    path = directory / name
    path.write_bytes(b"")
    return path


def make_whitespace(directory: Path, name: str = "blank.md") -> Path:
    return make_text(directory, name, " \n\t\r\n   \n")


def make_single_line_text(directory: Path, megabytes: int = 50) -> Path:
    """``megabytes`` MB of words on one line, written in 1 MB blocks (no 50 MB string held)."""
    path = directory / "one-line.txt"
    unit = b"lorem ipsum dolor sit amet "
    block = unit * (1024 * 1024 // len(unit))
    with path.open("wb") as fh:
        for _ in range(megabytes):
            fh.write(block)
    return path


# ---------------------------------------------------------------- hostile parse functions


def slow_parse(path: Path, **kwargs: Any) -> ParsedDocument:
    """Sleeps when the file name says ``slow``; otherwise parses for real."""
    if "slow" in Path(path).name:
        time.sleep(600)
    return parse_file(path, **kwargs)


def crashing_parse(path: Path, **kwargs: Any) -> ParsedDocument:
    """Kills its own process (no cleanup, like a segfault) on ``crash`` files."""
    if "crash" in Path(path).name:
        os._exit(1)
    return parse_file(path, **kwargs)


def raising_parse(path: Path, **kwargs: Any) -> ParsedDocument:
    """A parser bug: an unexpected exception type."""
    raise RuntimeError(f"parser bug on {Path(path).name}")
