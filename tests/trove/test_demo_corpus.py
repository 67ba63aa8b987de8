"""The bundled demo corpus: formats, config, permissions, golden queries, reproducibility.

Text is extracted with the libraries the generator writes with (pdfminer for
PDF), not with unstructured: these tests check the data, not the parser.
"""

from __future__ import annotations

import email
import importlib.util
import re
import sys
from collections import Counter
from email.policy import default as default_policy
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from wcmatch.glob import GLOBSTAR, globmatch

from core.acl import Acl, Principal
from retrieval.evaluate import GoldenQuery, load_queries, normalise_text
from trove.config import settings_from_dict
from trove.demo import CONFIG_TEMPLATE, CORPUS_DIR, DEMO_QUESTION, DEMO_USERS, QUERIES_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = REPO_ROOT / "scripts" / "build_demo_corpus.py"
FORMATS = {"md", "html", "pdf", "docx", "pptx", "xlsx", "eml"}
BINARY_FORMATS = {"pdf", "docx", "pptx", "xlsx", "eml"}


def corpus_files() -> list[str]:
    return sorted(
        p.relative_to(CORPUS_DIR).as_posix() for p in CORPUS_DIR.rglob("*") if p.is_file()
    )


def suffix(path: str | Path) -> str:
    return Path(path).suffix.lstrip(".").lower()


# --- text extraction --------------------------------------------------------------


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self._skip += tag in ("script", "style", "title")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style", "title")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def extract_text(path: Path) -> str:
    kind = suffix(path)
    if kind == "md":
        # What a Markdown parser keeps: the words, not the emphasis markers.
        return re.sub(r"[*`]", "", path.read_text(encoding="utf-8"))
    if kind == "html":
        parser = _HtmlText()
        parser.feed(path.read_text(encoding="utf-8"))
        return " ".join(parser.parts)
    if kind == "pdf":
        from pdfminer.high_level import extract_text as pdf_text

        return pdf_text(str(path))
    if kind == "docx":
        import docx

        document = docx.Document(str(path))
        cells = [c.text for t in document.tables for row in t.rows for c in row.cells]
        return "\n".join([p.text for p in document.paragraphs] + cells)
    if kind == "pptx":
        from pptx import Presentation

        return "\n".join(
            shape.text_frame.text
            for slide in Presentation(str(path)).slides
            for shape in slide.shapes
            if shape.has_text_frame
        )
    if kind == "xlsx":
        from openpyxl import load_workbook

        workbook = load_workbook(str(path), read_only=True)
        lines = [
            " ".join("" if v is None else str(v) for v in row)
            for ws in workbook.worksheets
            for row in ws.iter_rows(values_only=True)
        ]
        workbook.close()
        return "\n".join(lines)
    if kind == "eml":
        message = email.message_from_bytes(path.read_bytes(), policy=default_policy)
        body = message.get_body(preferencelist=("plain",))
        assert body is not None, f"{path}: no text/plain body"
        return f"{message['subject']}\n{body.get_content()}"
    raise AssertionError(f"no extractor for {path}")


@cache
def corpus_text(relative: str) -> str:
    return extract_text(CORPUS_DIR / relative)


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_demo_corpus", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# --- the documents ------------------------------------------------------------------


def test_corpus_covers_every_format_and_the_acl_folders() -> None:
    files = corpus_files()
    assert len(files) >= 15
    counts = Counter(suffix(f) for f in files)
    assert set(counts) == FORMATS, counts
    assert all(counts[f] >= 2 for f in BINARY_FORMATS), counts
    folders = {f.split("/", 1)[0] for f in files}
    assert folders == {"handbook", "engineering", "hr", "finance", "security"}
    total = sum((CORPUS_DIR / f).stat().st_size for f in files)
    assert total < 1_500_000, f"demo corpus is {total} bytes"


@pytest.mark.parametrize("relative", corpus_files())
def test_every_document_has_real_content(relative: str) -> None:
    words = len(corpus_text(relative).split())
    assert 150 <= words <= 1500, f"{relative}: {words} words"
    assert "lorem" not in corpus_text(relative).lower()


def test_binary_documents_have_structure() -> None:
    import docx
    from openpyxl import load_workbook
    from pdfminer.high_level import extract_pages
    from pptx import Presentation

    for pdf in CORPUS_DIR.rglob("*.pdf"):
        assert len(list(extract_pages(str(pdf)))) >= 2, f"{pdf} should have several pages"
    heading_styles: set[str] = set()
    for path in CORPUS_DIR.rglob("*.docx"):
        document = docx.Document(str(path))
        styles = {p.style.name for p in document.paragraphs}
        assert {"Title", "Heading 1"} <= styles, f"{path}: {styles}"
        heading_styles |= styles
        assert document.tables, f"{path} should hold a table"
        assert document.core_properties.author
    assert "Heading 2" in heading_styles
    for path in CORPUS_DIR.rglob("*.pptx"):
        slides = list(Presentation(str(path)).slides)
        assert len(slides) >= 5
        assert all(s.shapes.title is not None and s.shapes.title.text for s in slides)
    for path in CORPUS_DIR.rglob("*.xlsx"):
        workbook = load_workbook(str(path), read_only=True)
        assert len(workbook.sheetnames) >= 3, f"{path}: {workbook.sheetnames}"
        workbook.close()
    for path in CORPUS_DIR.rglob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=default_policy)
        assert all(message[h] for h in ("From", "To", "Subject", "Date", "Message-ID")), path


# --- config and permissions -------------------------------------------------------


def load_template() -> dict[str, object]:
    return yaml.safe_load(CONFIG_TEMPLATE.read_text(encoding="utf-8"))


def acl_for(relative: str) -> Acl:
    """First matching rule wins, else the default: the semantics of trove.config."""
    source = settings_from_dict(load_template(), base=CONFIG_TEMPLATE.parent).sources[0]
    for rule in source.acl.rules:
        if globmatch(relative, rule.match, flags=GLOBSTAR):
            return rule.to_acl()
    assert source.acl.default is not None
    return source.acl.default.to_acl()


def test_config_template_validates_and_points_at_the_corpus() -> None:
    settings = settings_from_dict(load_template(), base=CONFIG_TEMPLATE.parent)
    (source,) = settings.sources
    assert source.name == "demo"
    assert source.path == CORPUS_DIR
    assert settings.index.backend == "embedded"
    assert settings.embedding.model == "all-MiniLM-L6-v2"
    assert source.acl.default is not None
    assert source.acl.default.allow_groups == ["all-staff"]


EXPECTED_GROUPS = {
    "handbook": {"all-staff"},
    "engineering": {"engineering"},
    "hr": {"hr"},
    "finance": {"finance"},
    "security": {"security"},
}
EXCEPTIONS = {
    "engineering/postmortem-2025-03-inc-2291.html": {"engineering", "security"},
    "finance/board-deck-2025-q3.pptx": {"finance", "leadership"},
}


@pytest.mark.parametrize("relative", corpus_files())
def test_each_document_gets_its_folders_groups(relative: str) -> None:
    acl = acl_for(relative)
    expected = EXCEPTIONS.get(relative, EXPECTED_GROUPS[relative.split("/", 1)[0]])
    assert set(acl.allow_groups) == expected
    assert not acl.public and not acl.allow_users and not acl.deny_groups
    assert set(acl.deny_users) == ({"mallory"} if relative.startswith("hr/") else set())


def test_deny_rule_beats_mallorys_hr_group() -> None:
    acl = acl_for("hr/salary-bands.xlsx")
    assert acl.permits(Principal.of("dana", ["all-staff", "hr"]))
    assert not acl.permits(Principal.of("mallory", ["all-staff", "hr"]))
    assert acl_for("handbook/leave-policy.md").permits(Principal.of("mallory", ["all-staff", "hr"]))


# --- golden queries ------------------------------------------------------------------


@cache
def queries() -> tuple[GoldenQuery, ...]:
    return tuple(load_queries(QUERIES_FILE))


def test_golden_queries_load_and_cover_the_scenario() -> None:
    qs = queries()
    assert 25 <= len(qs) <= 40
    relevant_formats = {suffix(p) for q in qs for p in q.relevant}
    assert relevant_formats == FORMATS
    asked_by = {q.user for q in qs}
    assert {"alex", "sam", "dana", "priya", "omar", "mallory", "jordan"} <= asked_by
    restricted = [q for q in qs if q.forbidden]
    assert len(restricted) >= 4
    assert any(q.user == "mallory" and "hr/" in q.forbidden for q in qs)
    # Questions are paraphrased, never a sentence lifted from the relevant document.
    for q in qs:
        for path in q.relevant:
            assert normalise_text(q.query) not in normalise_text(corpus_text(path)), q.id


def test_every_query_path_exists() -> None:
    files = set(corpus_files())
    for q in queries():
        missing = set(q.relevant) - files
        assert not missing, f"{q.id}: {missing}"
        for prefix in q.forbidden:
            assert any(f.startswith(prefix) for f in files), f"{q.id}: {prefix!r} matches nothing"


def test_every_answer_occurs_in_a_relevant_document() -> None:
    for q in queries():
        assert q.answer is not None, f"{q.id} should name an answer"
        needle = normalise_text(q.answer)
        assert any(needle in normalise_text(corpus_text(p)) for p in q.relevant), (
            f"{q.id}: {q.answer!r} not found in {list(q.relevant)}"
        )


def test_askers_may_read_what_is_relevant_and_not_what_is_forbidden() -> None:
    files = corpus_files()
    for q in queries():
        principal = q.principal()
        for path in q.relevant:
            assert acl_for(path).permits(principal), f"{q.id}: {q.user} cannot read {path}"
        for path in (f for f in files if any(f.startswith(p) for p in q.forbidden)):
            assert not acl_for(path).permits(principal), f"{q.id}: {q.user} can read {path}"


def test_demo_question_separates_the_two_demo_users() -> None:
    asked = {q.user: q for q in queries() if q.query == DEMO_QUESTION}
    dana, sam = DEMO_USERS
    assert asked[dana.user].relevant.keys() == {"hr/salary-bands.xlsx"}
    assert list(asked[dana.user].groups) == list(dana.groups)
    assert asked[sam.user].relevant.keys() == {"handbook/compensation-faq.md"}
    assert not acl_for("hr/salary-bands.xlsx").permits(Principal.of(sam.user, sam.groups))


# --- the generator ----------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    generator = load_generator()
    first, second = tmp_path_factory.mktemp("run1"), tmp_path_factory.mktemp("run2")
    generator.build(first)
    generator.build(second)
    return first, second


def test_generator_is_deterministic(generated: tuple[Path, Path]) -> None:
    first, second = generated
    names = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    assert names
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_committed_binaries_match_their_sources(generated: tuple[Path, Path]) -> None:
    # Compared by extracted text, not bytes: the committed files must reflect the
    # sources, and byte layout may shift with the library versions installed.
    first, _ = generated
    names = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    committed = [f for f in corpus_files() if suffix(f) in BINARY_FORMATS]
    assert names == committed, "every binary document must have a source, and vice versa"
    for name in names:
        assert extract_text(first / name) == corpus_text(name), f"{name}: re-run the generator"
