"""`trove bench ocr`: OCR pages per second on 2 cores, and character accuracy against known text.

Test pages are generated, not collected, so the ground truth is exact: known
paragraphs and a table of numbers are rendered with reportlab's bundled Vera
fonts (regular, bold, italic; several sizes) onto a white page, which is then
rotated slightly and sprinkled with noise like a scan, and saved as a PNG, a
grey JPEG or a one-page image-only PDF. Character accuracy is
``1 - edit distance / length`` between the OCR'd and the true text, both with
whitespace collapsed (RapidFuzz's Levenshtein distance).

Side by side, in the same run, on the same pages: Trove's parse worker pool (two
workers, one page each at a time, OCR only where a page has no text) and the
peer the issue names, unstructured's ``partition_pdf``/``partition_image`` with
``strategy="ocr_only"`` in a pool of two processes.

These helpers also build the OCR tests' pages (:func:`render_page`,
:func:`scanned_pdf`, :func:`mixed_pdf`).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_WORDS = [
    "contract",
    "invoice",
    "supplier",
    "warehouse",
    "payment",
    "quarterly",
    "revenue",
    "budget",
    "approval",
    "signed",
    "agreement",
    "customer",
    "delivery",
    "schedule",
    "insurance",
    "policy",
    "premium",
    "claim",
    "account",
    "balance",
    "transfer",
    "audit",
    "report",
    "compliance",
    "review",
    "shipment",
    "order",
    "freight",
    "tariff",
    "customs",
    "Rotterdam",
    "Amsterdam",
    "Utrecht",
    "northwind",
    "harbour",
    "terminal",
    "container",
    "vessel",
    "crane",
    "berth",
    "maintenance",
    "inspection",
    "safety",
    "training",
    "employee",
    "manager",
    "department",
    "office",
    "building",
]


@dataclass(frozen=True)
class Page:
    """One generated test page: the file and the text drawn on it."""

    path: Path
    truth: str
    kind: str  # png, jpg, pdf


def _font(size: int, style: str = "") -> Any:
    import reportlab
    from PIL import ImageFont

    name = {"": "Vera.ttf", "bold": "VeraBd.ttf", "italic": "VeraIt.ttf"}[style]
    return ImageFont.truetype(str(Path(reportlab.__file__).parent / "fonts" / name), size)


def known_text(seed: int, *, paragraphs: int = 3, table_rows: int = 4) -> list[str]:
    """Deterministic lines: a title, short paragraphs, and a table of numbers."""
    rng = random.Random(seed)
    lines = [f"Northwind scanned record {seed}"]
    for _ in range(paragraphs):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(14, 22))]
        words[0] = words[0].capitalize()
        text = " ".join(words) + "."
        # Wrapped at ~60 characters: the page is about that wide at these sizes.
        line = ""
        for word in text.split():
            if len(line) + len(word) + 1 > 60:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        lines.append("")
    lines.append("Item Quantity Amount")
    for _ in range(table_rows):
        lines.append(
            f"{rng.choice(_WORDS)} {rng.randint(1, 999)} {rng.randint(100, 99999) / 100:.2f}"
        )
    return lines


def render_page(
    lines: Sequence[str],
    *,
    dpi: int = 200,
    size: int = 12,
    style: str = "",
    angle: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
) -> Any:
    """A letter-size grey page image of ``lines``; ``size`` in points, ``angle`` in degrees."""
    from PIL import Image, ImageDraw

    width, height = int(8.5 * dpi), int(11 * dpi)
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    font = _font(int(size * dpi / 72), style)
    title_font = _font(int(size * 1.4 * dpi / 72), "bold")
    y = dpi  # one-inch margins
    for i, line in enumerate(lines):
        chosen = title_font if i == 0 else font
        draw.text((dpi, y), line, fill=0, font=chosen)
        y += int(chosen.size * 1.5)
    if angle:
        page = page.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=255)
    if noise:
        rng = random.Random(seed)
        pixels = page.load()
        if pixels is None:  # typed optional; a new in-memory image always has pixels
            raise RuntimeError("Pillow gave no pixel access to a new image")
        for _ in range(int(width * height * noise)):
            x, yy = rng.randrange(width), rng.randrange(height)
            pixels[x, yy] = rng.choice((0, 96, 160))
    return page


def scanned_pdf(path: Path, pages: Sequence[Any], dpi: int = 200) -> Path:
    """An image-only PDF (no text layer), one page per image: what a scanner writes."""
    first, *rest = [p.convert("L") for p in pages]
    first.save(path, "PDF", resolution=float(dpi), save_all=True, append_images=rest)
    return path


def mixed_pdf(path: Path, text_page: Sequence[str], scanned: Any, dpi: int = 200) -> Path:
    """Page 1 with a real text layer, page 2 an image only."""
    from reportlab.lib.pagesizes import letter
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path), pagesize=letter)
    y = 720
    for line in text_page:
        pdf.drawString(72, y, line)
        y -= 16
    pdf.showPage()
    pdf.drawImage(ImageReader(scanned.convert("L")), 0, 0, width=letter[0], height=letter[1])
    pdf.showPage()
    pdf.save()
    return path


def character_accuracy(found: str, truth: str) -> float:
    """``1 - Levenshtein(found, truth) / len(truth)`` on whitespace-collapsed text, floored at 0."""
    from rapidfuzz.distance import Levenshtein

    a, b = " ".join(found.split()), " ".join(truth.split())
    if not b:
        return 1.0 if not a else 0.0
    return max(0.0, 1.0 - Levenshtein.distance(a, b) / len(b))


# Variety for the generated set: (point size, style, degrees, noise fraction, format).
_VARIANTS = (
    (12, "", 0.0, 0.0, "png"),
    (11, "", 0.8, 0.002, "pdf"),
    (14, "bold", -0.6, 0.001, "jpg"),
    (10, "italic", 0.4, 0.003, "pdf"),
    (12, "", -1.0, 0.002, "png"),
    (13, "", 0.5, 0.0, "pdf"),
)


def generate_pages(folder: Path, count: int) -> list[Page]:
    """``count`` scanned-style pages with their ground truth, cycling through the variants."""
    folder.mkdir(parents=True, exist_ok=True)
    pages: list[Page] = []
    for i in range(count):
        size, style, angle, noise, kind = _VARIANTS[i % len(_VARIANTS)]
        lines = known_text(i)
        image = render_page(lines, size=size, style=style, angle=angle, noise=noise, seed=i)
        path = folder / f"page-{i:03d}.{kind}"
        if kind == "pdf":
            scanned_pdf(path, [image])
        else:
            image.save(path, quality=85) if kind == "jpg" else image.save(path)
        pages.append(Page(path, "\n".join(lines), kind))
    return pages


# ---------------------------------------------------------------- the runs


def _trove_pool(pages: list[Page], workers: int) -> tuple[float, list[str], int]:
    from concurrent.futures import ThreadPoolExecutor

    from connectors.models import SourceDocument
    from core.acl import Acl
    from pipelines.config import LimitsConfig
    from pipelines.parse_worker import make_parse_fn

    docs = [
        SourceDocument(
            doc_id=f"bench:{p.path.name}",
            source="bench",
            path=p.path.name,
            uri=p.path.as_uri(),
            title=p.path.stem,
            version="1",
            size=p.path.stat().st_size,
            modified_at=None,
            doc_type=p.kind,
            acl=Acl.empty(),
            local_path=p.path,
        )
        for p in pages
    ]
    with make_parse_fn(LimitsConfig(), workers=workers) as parse:
        for worker in parse.workers:
            worker.start()  # start-up is not OCR: keep it out of the timing
        started = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            parsed = list(pool.map(parse, docs))
        elapsed = time.perf_counter() - started
    return elapsed, [d.text for d in parsed], sum(d.ocr_pages for d in parsed)


def _peer_one(path: str) -> str:
    from core.runtime import configure_offline_environment

    configure_offline_environment()
    from pipelines.offline_nlp import install_offline_nlp

    install_offline_nlp()
    if path.endswith(".pdf"):
        from unstructured.partition.pdf import partition_pdf

        elements = partition_pdf(filename=path, strategy="ocr_only", languages=["eng"])
    else:
        from unstructured.partition.image import partition_image

        elements = partition_image(filename=path, strategy="ocr_only", languages=["eng"])
    return "\n\n".join(str(e.text) for e in elements if str(e.text).strip())


def _peer_pool(pages: list[Page], workers: int) -> tuple[float, list[str]]:
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_peer_one, [str(pages[0].path)] * workers))  # imports, once per process
        started = time.perf_counter()
        texts = list(pool.map(_peer_one, [str(p.path) for p in pages]))
        elapsed = time.perf_counter() - started
    return elapsed, texts


def _summary(elapsed: float, texts: list[str], pages: list[Page]) -> dict[str, Any]:
    scores = [character_accuracy(t, p.truth) for t, p in zip(texts, pages, strict=True)]
    by_kind: dict[str, list[float]] = {}
    for score, page in zip(scores, pages, strict=True):
        by_kind.setdefault(page.kind, []).append(score)
    return {
        "seconds": round(elapsed, 2),
        "pages_per_s": round(len(pages) / elapsed, 3),
        "char_accuracy_median": round(statistics.median(scores), 4),
        "char_accuracy_min": round(min(scores), 4),
        "char_accuracy_by_format": {k: round(statistics.median(v), 4) for k, v in by_kind.items()},
    }


def run(pages: int = 12, workers: int = 2, peer: bool = True) -> dict[str, Any]:
    from pipelines.ocr import ocr_tools

    tools = ocr_tools()
    if tools.tesseract is None or tools.pdftoppm is None:
        raise RuntimeError("tesseract and pdftoppm are needed: install tesseract-ocr poppler-utils")
    with tempfile.TemporaryDirectory(prefix="trove-bench-ocr-") as folder:
        generated = generate_pages(Path(folder), pages)
        elapsed, texts, ocr_pages = _trove_pool(generated, workers)
        result: dict[str, Any] = {
            "benchmark": "ocr",
            "pages": pages,
            "workers": workers,
            "tesseract": _tesseract_version(tools.tesseract),
            "trove": {**_summary(elapsed, texts, generated), "pages_ocr": ocr_pages},
            "note": "shared, noisy machine: compare the two rows of one run, not across runs",
        }
        if peer:
            peer_elapsed, peer_texts = _peer_pool(generated, workers)
            result["unstructured_ocr_only"] = _summary(peer_elapsed, peer_texts, generated)
            result["speed_ratio_trove_over_peer"] = round(peer_elapsed / elapsed, 3)
    return result


def _tesseract_version(binary: str) -> str:
    import subprocess

    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).splitlines()
    return first[0] if first else "unknown"
