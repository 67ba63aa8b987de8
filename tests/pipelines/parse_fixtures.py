"""Builders for small real documents (made with the real format libraries) used by parse tests."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

NARRATIVE_1 = (
    "The travel team reviews every request within two days. "
    "Employees submit receipts after the trip has ended."
)
NARRATIVE_2 = (
    "Managers approve leave when the schedule allows it. "
    "The policy was updated last year and it applies to everyone."
)

MARKDOWN = f"""---
title: Travel and leave
redirect_from:
  - /travel/
---

{{% alert %}}
Read this first.
{{% endalert %}}

# Travel basics

{NARRATIVE_1}

## Booking

{NARRATIVE_2}

### Hotels

- Book hotels through the travel system.
- Keep every receipt until you are reimbursed.
"""

HTML = f"""<!DOCTYPE html>
<html><head><title>Leave &amp; Travel Policy</title></head>
<body>
<h1>Leave policy</h1>
<p>{NARRATIVE_1}</p>
<h2>Requesting leave</h2>
<p>{NARRATIVE_2}</p>
</body></html>
"""


def write_docx(path: Path) -> Path:
    """Headings 1/2 and a hard page break.

    unstructured counts only the ``w:lastRenderedPageBreak`` marks Word writes when it
    lays a document out; python-docx cannot render, so we add that mark where Word would
    (at the start of the first run on the new page), beside the hard break itself.
    """
    import docx
    from docx.enum.text import WD_BREAK
    from docx.oxml import OxmlElement

    document = docx.Document()
    document.add_heading("Onboarding guide", level=1)
    document.add_paragraph(NARRATIVE_1)
    document.add_heading("First week", level=2)
    document.add_paragraph(NARRATIVE_2).add_run().add_break(WD_BREAK.PAGE)
    heading = document.add_heading("Second page heading", level=1)
    heading.runs[0]._r.insert(0, OxmlElement("w:lastRenderedPageBreak"))
    document.add_paragraph("New staff receive a laptop and they set it up on the first day.")
    document.save(str(path))
    return path


def write_pptx(path: Path) -> Path:
    from pptx import Presentation

    deck = Presentation()
    layout = deck.slide_layouts[1]  # title and content
    for number, body in ((1, NARRATIVE_1), (2, NARRATIVE_2)):
        slide = deck.slides.add_slide(layout)
        slide.shapes.title.text = f"Quarterly review part {number}"
        slide.placeholders[1].text = body
    deck.save(str(path))
    return path


def write_xlsx(path: Path) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    first = book.active
    first.title = "Budget"
    for row in (("Item", "Cost"), ("Laptops", 1200), ("Desks", 450)):
        first.append(row)
    second = book.create_sheet("Staff")
    for row in (("Name", "Team"), ("Ada", "Platform"), ("Grace", "Search")):
        second.append(row)
    book.save(str(path))
    return path


def write_eml(path: Path) -> Path:
    message = EmailMessage()
    message["Subject"] = "Quarterly offsite plans"
    message["From"] = "Ada Lovelace <ada@example.org>"
    message["To"] = "team@example.org"
    message["Date"] = "Tue, 03 Mar 2026 10:15:00 +0000"
    message.set_content(f"{NARRATIVE_1}\n\n{NARRATIVE_2}\n")
    message.add_attachment(
        b"ATTACHMENT-SECRET-CONTENT should not be parsed",
        maintype="text",
        subtype="plain",
        filename="notes.txt",
    )
    path.write_bytes(bytes(message))
    return path


def write_pdf(path: Path, *, with_text: bool = True, password: str | None = None) -> Path:
    """Two pages; each has a heading and a sentence, or (``with_text=False``) only a rectangle."""
    from reportlab.lib.pagesizes import letter
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path), pagesize=letter, encrypt=password)
    for number in (1, 2):
        if with_text:
            pdf.setFont("Helvetica-Bold", 18)
            pdf.drawString(72, 720, f"Chapter {number} Overview")
            pdf.setFont("Helvetica", 11)
            pdf.drawString(
                72, 690, f"This page explains how the team handles request {number} every week."
            )
        else:
            pdf.rect(100, 100, 200, 200, fill=1)
        pdf.showPage()
    pdf.save()
    return path
