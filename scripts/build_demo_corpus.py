"""Build the binary documents of the demo corpus from their text sources.

The demo corpus (``trove/demo/corpus``) is a fictional company's documents.
Markdown and HTML pages are written by hand in the corpus itself; the PDF,
DOCX, PPTX, XLSX and EML files are generated here from sources under
``trove/demo/sources``, so their prose stays reviewable in plain text. A source
named ``<path>.<format>.<md|yaml>`` becomes ``corpus/<path>.<format>``.

Source formats:

* ``*.pdf.md`` / ``*.docx.md``: a Markdown subset (``#``/``##``/``###``
  headings, paragraphs, ``-`` bullets, ``1.`` numbered items, ``|`` pipe tables,
  and a ``<<<pagebreak>>>`` line), after a front-matter block of metadata.
* ``*.pptx.md``: ``#`` starts the title slide (the next paragraph is its
  subtitle); each ``##`` starts a slide whose ``-`` items are bullets (two
  leading spaces indent a level).
* ``*.eml.md``: front matter holds the headers (``from``, ``to``, ``cc``,
  ``subject``, ``date``, ``message_id``); the rest is the plain-text body.
* ``*.xlsx.yaml``: ``title``, ``author`` and ``sheets`` (``name`` and ``rows``;
  the first row is the header).

Output is deterministic: fixed document metadata, ReportLab's ``invariant``
mode, and ZIP members (DOCX/PPTX/XLSX) rewritten with a fixed timestamp, so a
re-run produces identical bytes with the same library versions.

Usage: ``python scripts/build_demo_corpus.py [--out DIR]``.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO_ROOT / "trove" / "demo"
SOURCES_DIR = DEMO_DIR / "sources"
CORPUS_DIR = DEMO_DIR / "corpus"

# Every generated file carries this timestamp wherever a format stores one.
FIXED_TIME = datetime(2025, 10, 1, 9, 0, 0)
ZIP_TIME = (2025, 10, 1, 9, 0, 0)
COMPANY = "Northwind Robotics"
PAGEBREAK = "<<<pagebreak>>>"


class CorpusBuildError(Exception):
    """A source file is malformed; the message names the file and the problem."""


# --- the Markdown subset -----------------------------------------------------------


@dataclass(frozen=True)
class Block:
    kind: str  # heading | paragraph | bullets | numbered | table | pagebreak
    text: str = ""
    level: int = 0
    items: tuple[tuple[int, str], ...] = ()  # (indent level, text) for lists
    rows: tuple[tuple[str, ...], ...] = ()  # for tables; the first row is the header


@dataclass
class Source:
    path: Path
    meta: dict[str, Any]
    body: str
    blocks: list[Block] = field(default_factory=list)


def read_source(path: Path) -> Source:
    """Split a ``---``-delimited front matter from the body and parse the body."""
    text = path.read_text(encoding="utf-8")
    match = re.match(r"\A---\n(.*?)\n---\n(.*)\Z", text, flags=re.DOTALL)
    if not match:
        raise CorpusBuildError(f"{path}: expected a front-matter block between '---' lines")
    meta = yaml.safe_load(match.group(1)) or {}
    if not isinstance(meta, dict):
        raise CorpusBuildError(f"{path}: front matter must be a mapping, got {meta!r}")
    body = match.group(2)
    return Source(path=path, meta=meta, body=body, blocks=parse_blocks(body, path))


def parse_blocks(body: str, origin: Path) -> list[Block]:
    blocks: list[Block] = []
    paragraph: list[str] = []
    items: list[tuple[int, str]] = []
    list_kind = ""
    rows: list[tuple[str, ...]] = []

    def flush() -> None:
        nonlocal list_kind
        if paragraph:
            blocks.append(Block("paragraph", text=" ".join(paragraph)))
            paragraph.clear()
        if items:
            blocks.append(Block(list_kind, items=tuple(items)))
            items.clear()
            list_kind = ""
        if rows:
            blocks.append(Block("table", rows=tuple(rows)))
            rows.clear()

    for lineno, raw in enumerate(body.splitlines(), start=1):
        line = raw.rstrip()
        stripped = line.strip()
        bullet = re.match(r"^( *)- (.+)$", line)
        numbered = re.match(r"^( *)\d+\. (.+)$", line)
        heading = re.match(r"^(#{1,3}) (.+)$", line)
        if not stripped:
            flush()
        elif stripped == PAGEBREAK:
            flush()
            blocks.append(Block("pagebreak"))
        elif heading:
            flush()
            blocks.append(Block("heading", text=heading.group(2), level=len(heading.group(1))))
        elif stripped.startswith("|"):
            if paragraph or items:
                flush()
            cells = tuple(c.strip() for c in stripped.strip("|").split("|"))
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                if rows and len(cells) != len(rows[0]):
                    raise CorpusBuildError(
                        f"{origin}:{lineno}: table row has {len(cells)} cells, "
                        f"the header has {len(rows[0])}"
                    )
                rows.append(cells)
        elif bullet or numbered:
            kind = "bullets" if bullet else "numbered"
            m = bullet or numbered
            assert m is not None
            if paragraph or rows or (items and list_kind != kind):
                flush()
            list_kind = kind
            items.append((len(m.group(1)) // 2, m.group(2)))
        elif items and raw.startswith("  "):
            # A continuation line of the previous list item.
            indent, text = items[-1]
            items[-1] = (indent, f"{text} {stripped}")
        else:
            if items or rows:
                flush()
            paragraph.append(stripped)
    flush()
    return blocks


def _meta(source: Source, key: str) -> str:
    value = source.meta.get(key)
    if not isinstance(value, str) or not value.strip():
        raise CorpusBuildError(f"{source.path}: front matter needs a non-empty {key!r}")
    return value


def _inline_pdf(text: str) -> str:
    """Escape for ReportLab's mini-markup, then turn **bold** into <b>."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)


def _plain(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"\1", text)


# --- PDF (ReportLab) -----------------------------------------------------------------


def render_pdf(source: Source) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_LEFT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import cm
    from reportlab.platypus import (
        ListFlowable,
        ListItem,
        PageBreak,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    title = _meta(source, "title")
    styles = getSampleStyleSheet()
    body = ParagraphStyle("Body", parent=styles["BodyText"], fontSize=10.5, leading=14)
    heading_styles = {
        1: ParagraphStyle("H1", parent=styles["Heading1"], fontSize=20, leading=24),
        2: ParagraphStyle("H2", parent=styles["Heading2"], fontSize=14, leading=18),
        3: ParagraphStyle("H3", parent=styles["Heading3"], fontSize=12, leading=15),
    }
    cell = ParagraphStyle("Cell", parent=body, fontSize=9.5, leading=12, alignment=TA_LEFT)

    story: list[Any] = []
    for block in source.blocks:
        if block.kind == "heading":
            story.append(Paragraph(_inline_pdf(block.text), heading_styles[block.level]))
        elif block.kind == "paragraph":
            story.append(Paragraph(_inline_pdf(block.text), body))
        elif block.kind in ("bullets", "numbered"):
            story.append(
                ListFlowable(
                    [ListItem(Paragraph(_inline_pdf(t), body)) for _, t in block.items],
                    # An en dash, not "•": the standard fonts map the bullet to a glyph
                    # that text extractors (pdfminer) cannot decode.
                    bulletType="bullet" if block.kind == "bullets" else "1",
                    start="\u2013" if block.kind == "bullets" else "1",
                    bulletFormat=None if block.kind == "bullets" else "%s.",
                    leftIndent=14,
                )
            )
        elif block.kind == "table":
            data = [[Paragraph(_inline_pdf(c), cell) for c in row] for row in block.rows]
            table = Table(data, hAlign="LEFT", repeatRows=1)
            table.setStyle(
                TableStyle(
                    [
                        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde4ee")),
                        ("GRID", (0, 0), (-1, -1), 0.5, colors.grey),
                        ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ]
                )
            )
            story.extend([table, Spacer(1, 6)])
        elif block.kind == "pagebreak":
            story.append(PageBreak())

    footer = f"{COMPANY} · {title}"

    def on_page(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 8)
        canvas.drawString(2 * cm, 1.2 * cm, footer)
        canvas.drawRightString(A4[0] - 2 * cm, 1.2 * cm, f"Page {doc.page}")
        canvas.restoreState()

    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=title,
        author=_meta(source, "author"),
        subject=source.meta.get("subject", ""),
        creator=COMPANY,
        invariant=1,
        leftMargin=2 * cm,
        rightMargin=2 * cm,
        topMargin=2 * cm,
        bottomMargin=2 * cm,
    )
    doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return buffer.getvalue()


# --- DOCX (python-docx) --------------------------------------------------------------


def render_docx(source: Source) -> bytes:
    import docx
    from docx.enum.text import WD_BREAK

    document = docx.Document()
    props = document.core_properties
    props.title = _meta(source, "title")
    props.author = _meta(source, "author")
    props.last_modified_by = _meta(source, "author")
    props.subject = source.meta.get("subject", "")
    props.comments = ""
    props.keywords = ""
    props.revision = 1
    props.created = FIXED_TIME
    props.modified = FIXED_TIME
    props.last_printed = FIXED_TIME

    for block in source.blocks:
        if block.kind == "heading":
            # The source's "#" is the document title; "##" and "###" are sections.
            document.add_heading(
                _plain(block.text), level=0 if block.level == 1 else block.level - 1
            )
        elif block.kind == "paragraph":
            _docx_runs(document.add_paragraph(), block.text)
        elif block.kind in ("bullets", "numbered"):
            base = "List Bullet" if block.kind == "bullets" else "List Number"
            for indent, text in block.items:
                style = base if indent == 0 else f"{base} {min(indent + 1, 3)}"
                _docx_runs(document.add_paragraph(style=style), text)
        elif block.kind == "table":
            table = document.add_table(rows=len(block.rows), cols=len(block.rows[0]))
            table.style = "Light Grid Accent 1"
            for r, row in enumerate(block.rows):
                for c, value in enumerate(row):
                    table.cell(r, c).text = _plain(value)
        elif block.kind == "pagebreak":
            document.add_paragraph().add_run().add_break(WD_BREAK.PAGE)

    buffer = io.BytesIO()
    document.save(buffer)
    return normalise_zip(buffer.getvalue())


def _docx_runs(paragraph: Any, text: str) -> None:
    for i, part in enumerate(re.split(r"\*\*(.+?)\*\*", text)):
        if part:
            paragraph.add_run(part).bold = i % 2 == 1


# --- PPTX (python-pptx) --------------------------------------------------------------


def render_pptx(source: Source) -> bytes:
    from pptx import Presentation

    deck = Presentation()
    props = deck.core_properties
    props.title = _meta(source, "title")
    props.author = _meta(source, "author")
    props.last_modified_by = _meta(source, "author")
    props.subject = source.meta.get("subject", "")
    props.revision = 1
    props.created = FIXED_TIME
    props.modified = FIXED_TIME
    props.last_printed = FIXED_TIME

    title_layout, content_layout = deck.slide_layouts[0], deck.slide_layouts[1]
    blocks = list(source.blocks)
    i = 0
    while i < len(blocks):
        block = blocks[i]
        if block.kind != "heading":
            raise CorpusBuildError(
                f"{source.path}: slide content must follow a '#' or '##' heading, got {block}"
            )
        i += 1
        if block.level == 1:
            slide = deck.slides.add_slide(title_layout)
            slide.shapes.title.text = _plain(block.text)
            if i < len(blocks) and blocks[i].kind == "paragraph":
                slide.placeholders[1].text = _plain(blocks[i].text)
                i += 1
            continue
        slide = deck.slides.add_slide(content_layout)
        slide.shapes.title.text = _plain(block.text)
        frame = slide.placeholders[1].text_frame
        first = True
        while i < len(blocks) and blocks[i].kind in ("bullets", "numbered", "paragraph"):
            entries = blocks[i].items or ((0, blocks[i].text),)
            for indent, text in entries:
                para = frame.paragraphs[0] if first else frame.add_paragraph()
                para.text = _plain(text)
                para.level = indent
                first = False
            i += 1

    buffer = io.BytesIO()
    deck.save(buffer)
    return normalise_zip(buffer.getvalue())


# --- XLSX (openpyxl) -----------------------------------------------------------------


def render_xlsx(path: Path) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.writer.excel import ExcelWriter

    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(spec, dict) or not spec.get("sheets"):
        raise CorpusBuildError(f"{path}: expected a mapping with a non-empty 'sheets' list")
    workbook = Workbook()
    workbook.remove(workbook.active)
    props = workbook.properties
    props.title = spec.get("title")
    props.creator = spec.get("author")
    props.lastModifiedBy = spec.get("author")
    props.created = FIXED_TIME
    props.modified = FIXED_TIME
    for sheet in spec["sheets"]:
        rows = sheet.get("rows") or []
        if not rows:
            raise CorpusBuildError(f"{path}: sheet {sheet.get('name')!r} has no rows")
        ws = workbook.create_sheet(title=sheet["name"])
        for row in rows:
            ws.append(row)
        for header_cell in ws[1]:
            header_cell.font = Font(bold=True)
        ws.freeze_panes = "A2"
        for col, width in enumerate(_column_widths(rows), start=1):
            ws.column_dimensions[ws.cell(row=1, column=col).column_letter].width = width

    # openpyxl's save_workbook stamps `modified` with the current time; the writer
    # it wraps does not, which keeps the output reproducible.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(workbook, archive).save()
    return normalise_zip(buffer.getvalue())


def _column_widths(rows: list[list[Any]]) -> list[float]:
    widths: list[float] = []
    for row in rows:
        for c, value in enumerate(row):
            length = min(len(str(value)) + 2, 60)
            if c >= len(widths):
                widths.append(length)
            else:
                widths[c] = max(widths[c], length)
    return widths


# --- EML (email) ---------------------------------------------------------------------


def render_eml(source: Source) -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = _meta(source, "from")
    message["To"] = _meta(source, "to")
    if source.meta.get("cc"):
        message["Cc"] = source.meta["cc"]
    message["Subject"] = _meta(source, "subject")
    sent = source.meta.get("date")
    if not isinstance(sent, datetime) or sent.tzinfo is None:
        raise CorpusBuildError(
            f"{source.path}: 'date' must be a timestamp with a time zone, got {sent!r}"
        )
    message["Date"] = format_datetime(sent)
    message["Message-ID"] = _meta(source, "message_id")
    message.set_content(source.body.strip() + "\n", subtype="plain", charset="utf-8", cte="8bit")
    return message.as_bytes()


# --- driver --------------------------------------------------------------------------


def normalise_zip(data: bytes) -> bytes:
    """Rewrite a ZIP with fixed member timestamps and attributes, keeping member order."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for item in src.infolist():
            info = zipfile.ZipInfo(item.filename, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            dst.writestr(info, src.read(item.filename))
    return out.getvalue()


RENDERERS: dict[str, Callable[[Path], bytes]] = {
    "pdf": lambda p: render_pdf(read_source(p)),
    "docx": lambda p: render_docx(read_source(p)),
    "pptx": lambda p: render_pptx(read_source(p)),
    "eml": lambda p: render_eml(read_source(p)),
    "xlsx": render_xlsx,
}


def output_name(source: Path) -> tuple[str, str]:
    """``salary-bands.xlsx.yaml`` -> (``salary-bands.xlsx``, ``xlsx``)."""
    target = source.name.rsplit(".", 1)[0]
    fmt = target.rsplit(".", 1)[-1] if "." in target else ""
    if fmt not in RENDERERS:
        raise CorpusBuildError(
            f"{source}: cannot tell the output format; name sources "
            f"<name>.<{'|'.join(sorted(RENDERERS))}>.<md|yaml>"
        )
    return target, fmt


def build(out_dir: Path, sources_dir: Path = SOURCES_DIR) -> list[Path]:
    """Render every source under ``sources_dir`` into ``out_dir``; return the files written."""
    sources = sorted(p for p in sources_dir.rglob("*") if p.is_file())
    if not sources:
        raise CorpusBuildError(f"no sources found under {sources_dir}")
    written: list[Path] = []
    for source in sources:
        name, fmt = output_name(source)
        target = out_dir / source.parent.relative_to(sources_dir) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(RENDERERS[fmt](source))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CORPUS_DIR, help="output folder")
    args = parser.parse_args(argv)
    for path in build(args.out):
        print(f"{path.stat().st_size:>8}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
