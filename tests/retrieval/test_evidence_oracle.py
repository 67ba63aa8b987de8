"""The evidence score computed per distinct word (issue 21) against the implementation
it replaced, kept here as the oracle: same scores, hence the same order, on a few
hundred passages of real text (the demo corpus's text files) and its questions."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.analysis import DEFAULT_ANALYZER, Analyzer
from retrieval.models import Citation, Passage
from retrieval.rerank import Candidate, evidence_scores, term_coverage

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "trove" / "demo"


def oracle_evidence_scores(
    query: str, candidates: Sequence[Candidate], analyzer: Analyzer = DEFAULT_ANALYZER
) -> list[float]:
    """retrieval.rerank.evidence_scores as of commit 0b92331: every passage analysed whole."""
    if not candidates:
        return []
    known = [c.dense for c in candidates if c.dense is not None]
    floor = min(known) if known else 0.0
    terms = analyzer.analyze(query)
    out = []
    for c in candidates:
        cosine = min(max(c.dense if c.dense is not None else floor, 0.0), 1.0)
        coverage = term_coverage(terms, set(analyzer.analyze(c.passage.text)))
        out.append(0.5 * cosine + 0.5 * coverage)
    return out


def _passages() -> list[str]:
    """Overlapping ~120-word windows of the demo corpus's text files, as written."""
    texts = []
    for file in sorted((DEMO / "corpus").rglob("*")):
        if file.suffix in (".md", ".html", ".eml"):
            words = file.read_text(encoding="utf-8").split(" ")
            texts += [" ".join(words[s : s + 120]) for s in range(0, len(words), 20)]
    # Text the corpus lacks but chunks can hold: full-width letters, accents,
    # underscores, contractions, digits, lone punctuation, an empty chunk.
    texts += [
        "Ｆｉｌｅ the FILE_NAME isn't café's “travel” policy—2024 № ½",
        "Don't re-submit the form SF-182; it's handled by HR (see §4.2).",
        "",
        "...",
    ]
    return texts


def _queries() -> list[str]:
    files = [DEMO / "queries.jsonl", ROOT / "benchmarks" / "18f-handbook" / "queries.jsonl"]
    lines = [line for f in files if f.is_file() for line in f.read_text().splitlines()]
    return [json.loads(line)["query"] for line in lines if line.strip()] + ["the of and", ""]


def _candidate(i: int, text: str, dense: float | None) -> Candidate:
    cite = Citation(f"d{i}", "t", "file:///x", "x.md", (), (), 0, len(text), "v1")
    return Candidate(Passage(f"d{i}#0", f"d{i}", "s", text, 0.0, cite), 1 / (60 + i), dense)


def test_evidence_scores_equal_the_whole_passage_oracle():
    texts, queries = _passages(), _queries()
    assert len(texts) >= 200 and len(queries) >= 20
    rng = random.Random(21)
    for query in queries:
        picked = rng.sample(range(len(texts)), 30)
        candidates = [
            _candidate(i, texts[i], rng.random() if rng.random() < 0.8 else None) for i in picked
        ]
        ours = evidence_scores(query, candidates)
        assert ours == oracle_evidence_scores(query, candidates), query
        order = sorted(range(len(ours)), key=lambda i: -ours[i])
        expected = oracle_evidence_scores(query, candidates)
        assert order == sorted(range(len(expected)), key=lambda i: -expected[i])
    # Every passage at least once, with queries built from its own words (coverage > 0).
    for i, text in enumerate(texts):
        query = " ".join(text.split()[3:9])
        candidates = [_candidate(i, text, None), _candidate(i + 1, texts[i - 1], 0.4)]
        assert evidence_scores(query, candidates) == oracle_evidence_scores(query, candidates)


def test_unstemmed_and_custom_stop_word_analyzers_agree_too():
    texts = _passages()[:60]
    for analyzer in (Analyzer(stem=False), Analyzer(stop_words=frozenset({"leave", "the"}))):
        candidates = [_candidate(i, t, 0.5) for i, t in enumerate(texts)]
        for query in ("annual leave carried over", "The travel policies", "leave"):
            assert evidence_scores(query, candidates, analyzer) == oracle_evidence_scores(
                query, candidates, analyzer
            )


EXCEPTIONAL_FORMS = "skis skies dying lying tying idly gently ugly early only singly sky news"


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_stemming_keeps_a_words_first_character(text):
    """evidence_scores skips words whose first character starts no query term: exact
    only if the stemmer never rewrites a word's first character."""
    for word in [*DEFAULT_ANALYZER.words(text), *EXCEPTIONAL_FORMS.split()]:
        term = DEFAULT_ANALYZER.term(word)
        assert term is None or not term or term[0] == word[0], (word, term)
