"""Measurements live in docs/benchmarks.md, and links into docs/ resolve.

Timings quoted in comments and docstrings go stale with every machine and every
round of work; the code says why a choice was made and links to the section of
docs/benchmarks.md that holds the numbers. Two checks keep it so:

* no comment or docstring of the packages quotes a timing (a number followed by
  ms/s/µs, a ×/x speed-up, queries per second or CPU-seconds), short of the
  explicit allow-list below;
* every ``docs/<page>.md#anchor`` link in docs/, README.md and the packages'
  comments and docstrings names a heading of that page (GitHub's slug rules).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGES = ("core", "connectors", "pipelines", "retrieval", "assets", "trove", "scripts")

_NUMBER = r"(?<![\w.])\d+(?:[.,]\d+)*(?:\s?[-–]\s?\d+(?:[.,]\d+)*)?"
_UNIT = r"""(?:
    \s?(?:ms|µs|us|ns)\b                       # 11 ms, 90 us, 50 ns
  | \s(?:s|secs?|seconds?)\b                   # 1.4 s (a space: "429s", "90s" are not)
  | \s?(?:x|×)(?![\w.`]|\s*\d)                 # 2.5x, 4× (not "3.x", "@2x.png", "100 x 384")
  | \s?CPU-s\b                                 # 1.5 CPU-s
  | \s?(?:queries|req|requests|texts|chunks|pages|docs|documents|rows)/s\b
  | \s?(?:qps|rps)\b
  | \s(?:queries|requests|texts|chunks|pages)\sper\ssecond\b
)"""
TIMING = re.compile(_NUMBER + _UNIT, re.VERBOSE | re.IGNORECASE)


@dataclass(frozen=True)
class Allowed:
    """A comment line that matches :data:`TIMING` but quotes no measurement."""

    path: str
    text: str
    why: str


ALLOWED = (
    Allowed(
        "trove/bench/resync.py",
        "(issue: >= 50x)",
        "the issue's target, which the benchmark reports against; not a measurement",
    ),
    Allowed(
        "scripts/opensearch_node.py",
        "(then SIGKILL after 30 s)",
        "the script's own grace period before SIGKILL, a setting; not a measurement",
    ),
)


@dataclass(frozen=True)
class Text:
    """One line of a comment or docstring."""

    path: Path
    line: int
    text: str


def _package_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _comment_and_docstring_lines(path: Path) -> list[Text]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    out = [
        Text(path, token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first = node.body[0] if node.body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            end = first.end_lineno or first.lineno
            out += [Text(path, n, lines[n - 1]) for n in range(first.lineno, end + 1)]
    return out


def _is_allowed(text: Text) -> bool:
    relative = text.path.relative_to(ROOT).as_posix()
    return any(a.path == relative and a.text in text.text for a in ALLOWED)


def timings_in(texts: list[Text]) -> list[str]:
    """``path:line: text`` for each line quoting a timing that the allow-list does not cover."""
    return [
        f"{t.path.relative_to(ROOT).as_posix()}:{t.line}: {t.text.strip()}"
        for t in texts
        if TIMING.search(t.text) and not _is_allowed(t)
    ]


def test_no_timings_in_package_comments_or_docstrings() -> None:
    texts = [t for path in _package_files() for t in _comment_and_docstring_lines(path)]
    found = timings_in(texts)
    assert not found, (
        "timings belong in docs/benchmarks.md (say why here and link the section):\n"
        + "\n".join(found)
    )


def test_every_allow_list_entry_still_matches_a_line() -> None:
    texts = [t for path in _package_files() for t in _comment_and_docstring_lines(path)]
    unused = [
        a
        for a in ALLOWED
        if not any(
            t.path.relative_to(ROOT).as_posix() == a.path
            and a.text in t.text
            and TIMING.search(t.text)
            for t in texts
        )
    ]
    assert not unused, f"allow-list entries that no longer match anything: {unused}"


@pytest.mark.parametrize(
    "line",
    [
        "# 100k rows 5.6 -> 3.3 ms on 2 cores.",
        "(1.4 s of 3)",
        "~2.1-2.5x torch's document throughput",
        "it is ~5x faster than numpy here",
        "~1.5 CPU-s",
        "two clients: 80 queries/s with hand-overs",
        "a slice costs ~0.3 us where a pread costs ~2 µs",
        "one query run took 5.37 ms",
        "(4×)",
    ],
)
def test_the_pattern_finds_timings(line: str) -> None:
    assert TIMING.search(line), line


@pytest.mark.parametrize(
    "line",
    [
        '``"90s"``, ``"15m"``, a number of seconds',  # a duration syntax
        "and 429s from the address limit",  # HTTP status codes
        "# True on 3.x",  # a version
        "# `logo@2x.png` is an asset name",
        "decimal, ``0x`` hex or ``0``-prefixed octal",
        "rows of a 100k x 384 file",  # a shape
        "OpenSearch cluster (2.19 and 3.x)",
        "RFC 3986 §6.2.2",
    ],
)
def test_the_pattern_ignores_what_is_not_a_timing(line: str) -> None:
    assert not TIMING.search(line), line


# Anchors ------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"""<a\s+(?:name|id)=["']([^"']+)["']""")
_MD_LINK = re.compile(r"\]\(([^)\s]*)#([^)\s]+)\)")
_DOCS_LINK = re.compile(r"\bdocs/([\w.-]+\.md)#([\w-]+)")
_INLINE_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, letters, digits, ``-`` and ``_`` kept,
    other punctuation and symbols dropped, each space a hyphen."""
    text = _INLINE_LINK.sub(r"\1", heading).strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in ("L", "N", "M"))
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor of a Markdown page (duplicates numbered ``-1``, ``-2`` as GitHub does)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        out.update(_HTML_ANCHOR.findall(line))
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


@dataclass(frozen=True)
class Link:
    source: str
    target: Path
    anchor: str


def _markdown_links(page: Path) -> list[Link]:
    out = []
    fenced = False
    for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
        if fenced:
            continue
        for target, anchor in _MD_LINK.findall(line):
            if "://" in target or (target and not target.endswith(".md")):
                continue
            resolved = (page.parent / target).resolve() if target else page
            out.append(Link(f"{page.relative_to(ROOT)}:{n}", resolved, anchor))
    return out


def _code_links() -> list[Link]:
    return [
        Link(f"{t.path.relative_to(ROOT)}:{t.line}", DOCS / name, anchor)
        for path in _package_files()
        for t in _comment_and_docstring_lines(path)
        for name, anchor in _DOCS_LINK.findall(t.text)
    ]


def broken(links: list[Link]) -> list[str]:
    cache: dict[Path, set[str]] = {}
    out = []
    for link in links:
        if not link.target.is_file():
            out.append(f"{link.source}: no such page {link.target.relative_to(ROOT)}")
            continue
        if link.target not in cache:
            cache[link.target] = anchors(link.target)
        if link.anchor not in cache[link.target]:
            out.append(f"{link.source}: {link.target.name}#{link.anchor} names no heading")
    return out


def test_links_into_docs_resolve() -> None:
    pages = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
    links = [link for page in pages for link in _markdown_links(page)] + _code_links()
    assert links, "found no links to check: the link patterns are wrong"
    found = broken(links)
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Query speed", "query-speed"),
        ("The `low_confidence` threshold", "the-low_confidence-threshold"),
        (
            "What each ranking stage adds or costs (`trove eval-stages`, k = 8, 40 queries)",
            "what-each-ranking-stage-adds-or-costs-trove-eval-stages-k--8-40-queries",
        ),
        (
            "The pipeline's own work cut by ~2 s (recipe v4)",
            "the-pipelines-own-work-cut-by-2-s-recipe-v4",
        ),
        ("Folders (`type: filesystem`)", "folders-type-filesystem"),
        ("See [the API](api.md) — now", "see-the-api--now"),
    ],
)
def test_github_slug(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_duplicate_headings_are_numbered_and_fenced_lines_are_not_headings(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n## Notes\n```bash\n# not a heading\n```\n## Notes\n", encoding="utf-8"
    )
    assert anchors(page) == {"title", "notes", "notes-1"}
