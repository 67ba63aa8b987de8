"""The rerank stage: the default evidence score, and a real sentence-transformers
CrossEncoder (a tiny random one built locally: no weights are available offline)."""

from __future__ import annotations

import pytest

from retrieval.analysis import DEFAULT_ANALYZER
from retrieval.models import Citation, Passage
from retrieval.rerank import (
    Candidate,
    CrossEncoderReranker,
    EvidenceReranker,
    RerankError,
    build_reranker,
    evidence_scores,
    rerank,
    term_coverage,
)


def _passage(i: int, text: str) -> Passage:
    cite = Citation(f"d{i}", "t", "file:///x", "x.md", (), (), 0, len(text), "v1")
    return Passage(f"d{i}#0", f"d{i}", "s", text, 0.0, cite)


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    """A 2-layer BERT cross-encoder with the MiniLM tokenizer, saved to a local folder."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from retrieval.embedding.base import resolve_model_path

    path = tmp_path_factory.mktemp("cross-encoder")
    tok = AutoTokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"))
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
        initializer_range=1.0,  # the default gives near-identical scores
    )
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_term_coverage():
    assert term_coverage(["leav", "polici"], {"leav", "day"}) == 0.5
    assert term_coverage([], {"x"}) == 0.0
    assert term_coverage(["a", "a", "b"], {"a", "b"}) == 1.0


def test_evidence_prefers_passages_that_match_the_query():
    cands = [
        Candidate(_passage(0, "office printer network"), fused=0.03, dense=0.10),
        Candidate(_passage(1, "Parental leave lasts sixteen weeks"), fused=0.02, dense=0.55),
        Candidate(_passage(2, "leave"), fused=0.01, dense=None),
    ]
    scores = evidence_scores("how long is parental leave", cands)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[1] > scores[2] > scores[0]
    # A candidate the dense retriever did not return gets the lowest cosine it did return.
    terms = set(DEFAULT_ANALYZER.analyze("how long is parental leave"))
    assert scores[2] == pytest.approx(0.5 * 0.10 + 0.5 * (1 / len(terms)))
    order = rerank("how long is parental leave", cands, EvidenceReranker())
    assert [c.passage.doc_id for c, _ in order] == ["d1", "d2", "d0"]


def test_cross_encoder_orders_by_its_own_scores(tiny_cross_encoder):
    from sentence_transformers import CrossEncoder

    texts = ["annual leave days", "hotel per diem", "incident severity", "salary bands", "badge"]
    cands = [Candidate(_passage(i, t), fused=1.0 / (i + 1)) for i, t in enumerate(texts)]
    reranker = CrossEncoderReranker(tiny_cross_encoder)
    assert not reranker.loaded
    order = rerank("leave policy", cands, reranker)
    assert reranker.loaded
    expected = CrossEncoder(tiny_cross_encoder).predict([("leave policy", t) for t in texts])
    want = sorted(range(len(texts)), key=lambda i: -float(expected[i]))
    assert [c.passage.doc_id for c, _ in order] == [f"d{i}" for i in want]
    assert [s for _, s in order] == pytest.approx(
        sorted((float(x) for x in expected), reverse=True)
    )
    assert len(set(round(s, 6) for _, s in order)) > 1, "a degenerate model proves nothing"


def test_build_reranker_caches_and_fails_clearly(tmp_path, tiny_cross_encoder):
    assert isinstance(build_reranker(None), EvidenceReranker)
    assert build_reranker(tiny_cross_encoder) is build_reranker(tiny_cross_encoder)
    broken = CrossEncoderReranker(str(tmp_path / "no-such-model"))
    with pytest.raises(RerankError, match="no-such-model"):
        broken.warm_up()
    with pytest.raises(RerankError):
        CrossEncoderReranker("  ")


def test_service_uses_the_configured_cross_encoder(tmp_path, tiny_cross_encoder):
    from core.acl import Principal
    from retrieval.config import RetrievalConfig
    from tests.retrieval.api.helpers import make_service

    service = make_service(tmp_path, retrieval=RetrievalConfig(reranker=tiny_cross_encoder))
    service.reranker = build_reranker(tiny_cross_encoder)
    try:
        alice = Principal.of("alice", ["staff"])
        on = service.search(alice, "leave days travel", top_k=5, rerank=True)
        off = service.search(alice, "leave days travel", top_k=5, rerank=False)
        assert {r.doc_id for r in on.results} <= {"hb:leave.md", "hb:travel.md"}
        scores = [r.score for r in on.results]
        assert scores == sorted(scores, reverse=True)
        assert [r.score for r in on.results] != [r.score for r in off.results]
    finally:
        service.close()
