"""OCR for scanned pages and images, offline, with Debian's tesseract and poppler.

Where it applies (:func:`pipelines.parse.parse_file` decides, per source ``ocr``):

* ``auto`` (default): a PDF page whose text layer has almost no text (fewer than
  :data:`MIN_TEXT_CHARS` visible characters) is rendered and OCR'd; pages with
  text keep the fast pdfminer path. Images are always OCR'd.
* ``always``: every PDF page is OCR'd (a text layer that is garbage is replaced).
* ``off``: nothing is OCR'd; a document that only OCR could read fails with
  ``needs_ocr``, and a mixed PDF keeps its text pages.

Tools: ``pdftoppm`` (poppler-utils) renders one PDF page at a time to a grey PNG,
``tesseract`` reads it (plain text, one thread: the parse worker pool runs
documents in parallel). Both run as subprocesses with a timeout taken from the
document's OCR budget. The OCR'd text of each page is handed to unstructured's
``partition_text`` so paragraphs, titles and list items are classified like any
text document; each element keeps its page number.

Hostile input is refused before anything is rendered or decoded, each with its
own reason class: a page or image whose pixel count is over
``limits.max_image_pixels`` (``decompression_bomb``; PIL's own
``MAX_IMAGE_PIXELS`` is set to the same limit), more pages to OCR than
``limits.max_ocr_pages`` (``too_many_pages``), OCR of one document past its budget
(``ocr_timeout``: ``limits.ocr_page_timeout_s`` per page, at most
``limits.ocr_timeout_s``), an image PIL cannot decode (``malformed``). Without
tesseract (or the language's data) an image or scanned PDF fails with
``needs_ocr`` and ``trove status`` says what to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pipelines.errors import (
    DecompressionBombError,
    NeedsOcrError,
    OcrTimeoutError,
    ParseError,
    TooManyPagesError,
)

OcrMode = Literal["auto", "off", "always"]
OCR_MODES: tuple[str, ...] = ("auto", "off", "always")

MIN_TEXT_CHARS = 16
"""A PDF page whose text layer has fewer visible characters than this is OCR'd (``auto``)."""

RENDER_DPI = 300
MIN_RENDER_DPI = 100
SYSTEM_PACKAGES = ("tesseract-ocr", "tesseract-ocr-eng", "poppler-utils")
INSTALL_HINT = (
    "install Debian/Ubuntu's " + " ".join(SYSTEM_PACKAGES) + " (`make setup` does, as root), "
    "or tesseract and poppler from your platform's packages (see docs/configuration.md, OCR)"
)

_LANGUAGE_RE = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class OcrSettings:
    """A source's OCR choice, as sent to a parse worker (plain values)."""

    mode: str = "auto"
    languages: tuple[str, ...] = ("eng",)

    def __post_init__(self) -> None:
        if self.mode not in OCR_MODES:
            raise ValueError(f"ocr must be one of {', '.join(OCR_MODES)}, got {self.mode!r}")
        if not self.languages or not all(_LANGUAGE_RE.match(code) for code in self.languages):
            raise ValueError(
                f"ocr_languages must be tesseract language codes (eng, deu...), got "
                f"{list(self.languages)}"
            )


@dataclass
class OcrBudget:
    """What one document may still spend on OCR, and what it spent."""

    limit_s: float
    started: float = field(default_factory=time.monotonic)
    pages: int = 0

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def remaining(self, name: str) -> float:
        left = self.limit_s - self.seconds
        if left <= 0:
            raise OcrTimeoutError(
                f"OCR of {name!r} took longer than its budget of {self.limit_s:g} s "
                f"({self.pages} page(s) done; limits.ocr_page_timeout_s per page, at most "
                "limits.ocr_timeout_s)"
            )
        return left


@dataclass(frozen=True)
class OcrPage:
    """The text tesseract read on one page (1-based)."""

    page: int
    text: str


# ---------------------------------------------------------------- availability


@dataclass(frozen=True)
class OcrTools:
    """What is installed: the programs found, and tesseract's languages."""

    tesseract: str | None
    pdftoppm: str | None
    languages: frozenset[str]

    def missing(self, languages: Sequence[str], *, pdf: bool) -> str | None:
        """Why OCR cannot run for these languages (None: it can)."""
        if self.tesseract is None:
            return "tesseract is not installed"
        if pdf and self.pdftoppm is None:
            return "pdftoppm (poppler-utils) is not installed"
        absent = [code for code in languages if code not in self.languages]
        if absent:
            packages = ", ".join(
                f"tesseract-ocr-{code.replace('_', '-').lower()}" for code in absent
            )
            return f"tesseract has no data for {', '.join(absent)} (install {packages})"
        return None


@lru_cache(maxsize=1)
def ocr_tools() -> OcrTools:
    """The OCR programs on ``PATH`` and tesseract's installed languages (cached per process)."""
    tesseract = shutil.which("tesseract")
    languages: frozenset[str] = frozenset()
    if tesseract is not None:
        try:
            listed = subprocess.run(
                [tesseract, "--list-langs"], capture_output=True, text=True, timeout=30, check=False
            )
            lines = (listed.stdout + "\n" + listed.stderr).splitlines()
            languages = frozenset(
                line.strip() for line in lines if line.strip() and " " not in line.strip()
            )
        except (OSError, subprocess.SubprocessError):
            tesseract = None
    return OcrTools(tesseract, shutil.which("pdftoppm"), languages)


def _require(settings: OcrSettings, name: str, *, pdf: bool, what: str) -> OcrTools:
    if settings.mode == "off":
        raise NeedsOcrError(f"{what} {name!r} has no text layer and OCR is off for this source")
    tools = ocr_tools()
    why = tools.missing(settings.languages, pdf=pdf)
    if why is not None:
        raise NeedsOcrError(f"{what} {name!r} needs OCR, but {why}: {INSTALL_HINT}")
    return tools


def can_ocr(settings: OcrSettings, *, pdf: bool) -> bool:
    return settings.mode != "off" and ocr_tools().missing(settings.languages, pdf=pdf) is None


# ---------------------------------------------------------------- running tesseract


def _tesseract(tools: OcrTools, image: Path, languages: Sequence[str], timeout_s: float) -> str:
    assert tools.tesseract is not None
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}  # one core per document: the pool parallelises
    try:
        done = subprocess.run(
            [tools.tesseract, str(image), "stdout", "-l", "+".join(languages), "--psm", "3"],
            capture_output=True,
            timeout=timeout_s,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ParseError(
            f"tesseract could not read {image.name!r}: {detail[-1] if detail else done.returncode}"
        )
    return done.stdout.decode("utf-8", "replace")


def _ocr_png(
    tools: OcrTools, png: Path, settings: OcrSettings, budget: OcrBudget, name: str
) -> str:
    try:
        text = _tesseract(tools, png, settings.languages, budget.remaining(name))
    except subprocess.TimeoutExpired:
        budget.remaining(name)  # raises: the budget is spent
        raise
    budget.pages += 1
    return text


# ---------------------------------------------------------------- PDFs


def page_pixels(width_pt: float, height_pt: float, dpi: int) -> int:
    return round(width_pt / 72 * dpi) * round(height_pt / 72 * dpi)


def render_dpi(name: str, page: int, width_pt: float, height_pt: float, max_pixels: int) -> int:
    """The DPI to render a page at: :data:`RENDER_DPI`, lower for a big page, refused when huge."""
    dpi = RENDER_DPI
    while dpi > MIN_RENDER_DPI and page_pixels(width_pt, height_pt, dpi) > max_pixels:
        dpi -= 25
    pixels = page_pixels(width_pt, height_pt, dpi)
    if pixels > max_pixels:
        raise DecompressionBombError(
            f"page {page} of {name!r} is {width_pt / 72:,.0f} x {height_pt / 72:,.0f} inches: "
            f"{pixels:,} pixels even at {dpi} dpi, over the limit of {max_pixels:,} "
            "(limits.max_image_pixels)"
        )
    return dpi


def ocr_pdf_pages(
    path: Path,
    pages: Sequence[int],
    page_sizes: dict[int, tuple[float, float]],
    settings: OcrSettings,
    limits: Any,
    budget: OcrBudget,
) -> list[OcrPage]:
    """Render and OCR the given 1-based pages of a PDF, in order.

    Every page's size is checked against ``limits.max_image_pixels`` and the page
    count against ``limits.max_ocr_pages`` before the first page is rendered.
    """
    name = path.name
    tools = _require(settings, name, pdf=True, what="PDF")
    if len(pages) > limits.max_ocr_pages:
        raise TooManyPagesError(
            f"PDF {name!r} has {len(pages):,} pages without text to OCR, over the limit of "
            f"{limits.max_ocr_pages:,} (limits.max_ocr_pages)"
        )
    dpis = {p: render_dpi(name, p, *page_sizes[p], limits.max_image_pixels) for p in pages}
    assert tools.pdftoppm is not None
    out: list[OcrPage] = []
    with tempfile.TemporaryDirectory(prefix="trove-ocr-") as folder:
        for page in pages:
            prefix = Path(folder) / f"page-{page}"
            command = [tools.pdftoppm, "-f", str(page), "-l", str(page), "-r", str(dpis[page])]
            command += ["-gray", "-png", "-singlefile", str(path), str(prefix)]
            try:
                done = subprocess.run(
                    command, capture_output=True, timeout=budget.remaining(name), check=False
                )
            except subprocess.TimeoutExpired:
                budget.remaining(name)
                raise
            png = prefix.with_suffix(".png")
            if done.returncode != 0 or not png.exists():
                detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
                raise ParseError(
                    f"malformed PDF {name!r}: page {page} could not be rendered for OCR"
                    + (f" ({detail[-1][:200]})" if detail else "")
                )
            out.append(OcrPage(page, _ocr_png(tools, png, settings, budget, name)))
            png.unlink()
    return out


# ---------------------------------------------------------------- images

_pil_lock = threading.Lock()


def ocr_image(path: Path, settings: OcrSettings, limits: Any, budget: OcrBudget) -> list[OcrPage]:
    """OCR every frame of an image file (a multi-page TIFF has several), in order.

    The header is read first: frame count and every frame's size are checked
    against the limits before any pixel is decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = path.name
    with _pil_lock:
        # PIL refuses images over twice this (and warns over it): the same limit as ours.
        Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    tools = _require(settings, name, pdf=False, what="image")
    out: list[OcrPage] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                frames = int(getattr(image, "n_frames", 1) or 1)
                if frames > limits.max_ocr_pages:
                    raise TooManyPagesError(
                        f"image {name!r} has {frames:,} pages (frames), over the limit of "
                        f"{limits.max_ocr_pages:,} (limits.max_ocr_pages)"
                    )
                with tempfile.TemporaryDirectory(prefix="trove-ocr-") as folder:
                    for index in range(frames):
                        image.seek(index)
                        _check_pixels(name, index + 1, image.size, limits.max_image_pixels)
                        grey = ImageOps.exif_transpose(image).convert("L")
                        png = Path(folder) / f"frame-{index + 1}.png"
                        grey.save(png)
                        text = _ocr_png(tools, png, settings, budget, name)
                        out.append(OcrPage(index + 1, text))
                        png.unlink()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecompressionBombError(
            f"image {name!r} is too large to decode: {exc} (limits.max_image_pixels)"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ParseError(
            f"corrupt or unreadable image {name!r}: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    return out


def _check_pixels(name: str, frame: int, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        where = f" (page {frame})" if frame > 1 else ""
        raise DecompressionBombError(
            f"image {name!r}{where} declares {width:,} x {height:,} = {width * height:,} pixels, "
            f"over the limit of {max_pixels:,} (limits.max_image_pixels)"
        )
