"""Evaluation metrics, checked against values worked out by hand."""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path

import pytest

from retrieval.evaluate import (
    EvalError,
    GoldenQuery,
    Retrieved,
    citation_hit,
    evaluate,
    find_leaks,
    load_queries,
    mrr_at_k,
    ndcg_at_k,
    percentile,
    ranked_documents,
    recall_at_k,
)
from retrieval.models import Citation, Passage

_counter = iter(range(10_000))


def passage(path: str, text: str = "some text", chunk_id: str | None = None) -> Passage:
    cid = chunk_id or f"demo:{path}#{next(_counter)}"
    return Passage(
        chunk_id=cid,
        doc_id=f"demo:{path}",
        source="demo",
        text=text,
        score=1.0,
        citation=Citation(
            doc_id=f"demo:{path}",
            title=path,
            uri=f"file:///{path}",
            path=path,
            section=(),
            pages=(),
            char_start=0,
            char_end=len(text),
            doc_version="v1",
        ),
    )


def query(**overrides: object) -> GoldenQuery:
    data: dict[str, object] = {
        "id": "q1",
        "query": "how many leave days?",
        "user": "sam",
        "groups": ["all-staff"],
        "relevant": ["a.md"],
    }
    data.update(overrides)
    return GoldenQuery.model_validate(data)


# --- ranking metrics -------------------------------------------------------------


def test_ranked_documents_keeps_first_occurrence_order() -> None:
    passages = [passage("b.md"), passage("a.md"), passage("b.md"), passage("c.md")]
    assert ranked_documents(passages) == ["b.md", "a.md", "c.md"]


def test_recall_counts_a_document_once_even_with_many_passages() -> None:
    # Three passages of a.md then one of x.md: one of the two relevant docs is found.
    passages = [passage("a.md"), passage("a.md"), passage("a.md"), passage("x.md")]
    docs = ranked_documents(passages)
    assert recall_at_k(docs, {"a.md": 1, "b.md": 1}, k=10) == 0.5
    # With k=2 the distinct list is [a.md, x.md]; duplicates do not push b.md out.
    docs_with_b = ranked_documents([*passages, passage("b.md")])
    assert recall_at_k(docs_with_b, {"a.md": 1, "b.md": 1}, k=2) == 0.5
    assert recall_at_k(docs_with_b, {"a.md": 1, "b.md": 1}, k=3) == 1.0


def test_mrr_with_first_relevant_at_rank_three() -> None:
    docs = ["x.md", "y.md", "a.md", "b.md"]
    assert mrr_at_k(docs, {"a.md": 1, "b.md": 1}, k=10) == pytest.approx(1 / 3)
    assert mrr_at_k(docs, {"a.md": 1}, k=2) == 0.0


def test_mrr_is_measured_on_distinct_documents() -> None:
    # x.md twice, then a.md: a.md is the second distinct document, so RR = 1/2.
    docs = ranked_documents([passage("x.md"), passage("x.md"), passage("a.md")])
    assert mrr_at_k(docs, {"a.md": 1}, k=10) == 0.5


def test_graded_ndcg_by_hand() -> None:
    relevant = {"a.md": 3, "b.md": 2, "c.md": 1}
    # Ranked: b (2), x (0), a (3).
    # DCG  = 2/log2(2) + 0 + 3/log2(4) = 2 + 1.5 = 3.5
    # IDCG = 3/log2(2) + 2/log2(3) + 1/log2(4) = 3 + 1.2618595 + 0.5 = 4.7618595
    dcg = 3.5
    idcg = 3 + 2 / math.log2(3) + 0.5
    assert ndcg_at_k(["b.md", "x.md", "a.md"], relevant, k=10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["b.md", "x.md", "a.md"], relevant, k=10) == pytest.approx(0.7350, abs=1e-4)
    assert ndcg_at_k(["a.md", "b.md", "c.md"], relevant, k=10) == pytest.approx(1.0)
    assert ndcg_at_k(["x.md"], relevant, k=10) == 0.0


def test_ndcg_ideal_is_cut_at_k() -> None:
    # k=1: ideal is the single best grade (3); returning b (2) first scores 2/3.
    relevant = {"a.md": 3, "b.md": 2}
    assert ndcg_at_k(["b.md", "a.md"], relevant, k=1) == pytest.approx(2 / 3)


def test_k_must_be_positive() -> None:
    with pytest.raises(EvalError, match="k must be >= 1, got 0"):
        recall_at_k(["a.md"], {"a.md": 1}, k=0)


# --- citations and leaks ------------------------------------------------------------


def test_citation_hit_normalises_whitespace_and_case() -> None:
    relevant = {"hr/bands.xlsx": 1}
    hit = [passage("hr/bands.xlsx", "Senior  Engineer\n\tRotterdam   78000 104000")]
    assert citation_hit(hit, relevant, "senior engineer rotterdam 78000")
    # The same text in a non-relevant document is not a citation hit.
    other = [passage("handbook/faq.md", "Senior Engineer Rotterdam 78000")]
    assert not citation_hit(other, relevant, "senior engineer rotterdam 78000")
    assert not citation_hit(hit, relevant, "85000")


def test_leaks_by_forbidden_prefix_and_by_permission() -> None:
    a = passage("handbook/faq.md", chunk_id="faq#0")
    b = passage("hr/bands.xlsx", chunk_id="bands#0")
    c = passage("finance/budget.xlsx", chunk_id="budget#0")
    unreadable = {"budget#0"}
    leaks = find_leaks(
        [a, b, c, b], forbidden=["hr/"], may_read=lambda p: p.chunk_id not in unreadable
    )
    assert leaks == ["bands#0", "budget#0"]
    assert find_leaks([a, b, c], forbidden=[]) == []


# --- the evaluation run -------------------------------------------------------------


def test_evaluate_report_shape_and_values() -> None:
    q1 = query(id="q1", relevant={"a.md": 2, "b.md": 1}, answer="twenty  seven days")
    q2 = query(id="q2", relevant=["c.md"], forbidden=["hr/"])
    results = {
        "q1": [passage("x.md"), passage("a.md", "You get Twenty seven\ndays."), passage("a.md")],
        "q2": [passage("hr/bands.xlsx", chunk_id="bands#3"), passage("d.md", chunk_id="d#0")],
    }
    calls: list[str] = []

    def search(q: GoldenQuery) -> list[Passage]:
        calls.append(q.id)
        return results[q.id]

    def may_read(q: GoldenQuery, p: Passage) -> bool:
        return not (q.id == "q2" and p.chunk_id == "d#0")

    report = evaluate([q1, q2], search, k=10, may_read=may_read).to_dict()
    assert calls == ["q1", "q2"]
    assert set(report) == {
        "queries",
        "k",
        "recall@k",
        "mrr@10",
        "ndcg@10",
        "citation_hit_rate",
        "leaks",
        "negative",
        "latency_ms",
        "per_query",
    }
    assert report["queries"] == 2
    # q1: recall 1/2, RR 1/2, nDCG (2/log2 3) / (2 + 1/log2 3); q2: all zero.
    assert report["recall@k"] == pytest.approx(0.25)
    assert report["mrr@10"] == pytest.approx(0.25)
    q1_ndcg = (2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert report["ndcg@10"] == pytest.approx(q1_ndcg / 2)
    assert report["citation_hit_rate"] == 1.0  # only q1 has an answer
    assert report["leaks"] == 2
    assert report["per_query"] == [
        {"id": "q1", "returned": ["x.md", "a.md"], "leaks": [], "negative": False},
        {
            "id": "q2",
            "returned": ["hr/bands.xlsx", "d.md"],
            "leaks": ["bands#3", "d#0"],
            "negative": False,
        },
    ]
    assert report["negative"] == {
        "questions": 0,
        "empty_answers": 0,
        "low_confidence": 0,
        "confident_answers": 0,
        "leaks": 0,
        "passages_returned": 0,
    }
    assert set(report["latency_ms"]) == {"p50", "p95"}
    assert 0 <= report["latency_ms"]["p50"] <= report["latency_ms"]["p95"]
    json.dumps(report)  # the report is plain JSON


def test_citation_only_counts_the_top_k_documents() -> None:
    q = query(relevant=["a.md"], answer="27 days")
    passages = [passage("x.md"), passage("a.md", "27 days")]
    assert evaluate([q], lambda _: passages, k=1).to_dict()["citation_hit_rate"] == 0.0
    assert evaluate([q], lambda _: passages, k=2).to_dict()["citation_hit_rate"] == 1.0


def test_evaluate_without_answers_or_queries() -> None:
    report = evaluate([query()], lambda _: [passage("a.md")]).to_dict()
    assert report["citation_hit_rate"] is None
    assert report["recall@k"] == 1.0
    empty = evaluate([], lambda _: []).to_dict()
    assert empty["queries"] == 0
    assert empty["recall@k"] is None
    assert empty["latency_ms"] == {"p50": None, "p95": None}


def test_evaluate_propagates_search_errors() -> None:
    def broken(_: GoldenQuery) -> list[Passage]:
        raise RuntimeError("index offline")

    with pytest.raises(RuntimeError, match="index offline"):
        evaluate([query()], broken)


def test_percentile_interpolates() -> None:
    assert percentile([10.0, 20.0, 30.0, 40.0], 50) == 25.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 95) == pytest.approx(38.5)
    assert percentile([7.0], 95) == 7.0


# --- loading ---------------------------------------------------------------------


def write_lines(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "queries.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_accepts_list_and_graded_relevance(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path,
        '{"id": "a", "query": "q?", "user": "u", "groups": ["g"], "relevant": ["x.md"]}',
        "",
        '{"id": "b", "query": "q?", "user": "u", "relevant": {"x.md": 2, "y.md": 1},'
        ' "answer": "27", "forbidden": ["hr/"], "tenant": "acme"}',
    )
    first, second = load_queries(path)
    assert first.relevant == {"x.md": 1.0}
    assert second.relevant == {"x.md": 2.0, "y.md": 1.0}
    assert second.principal().tenant == "acme"
    assert second.forbidden == ["hr/"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"queries\.jsonl:2: not valid JSON"),
        ("[1, 2]", r"queries\.jsonl:2: expected a JSON object, got list"),
        ('{"id": "b", "query": "q", "user": "u"}', r":2: invalid golden query: relevant: Field"),
        ('{"id": "b", "query": "q", "user": "u", "relevant": {"x": 0}}', r":2: .*grades must"),
        ('{"id": "b", "query": "q", "user": "u", "relevant": ["x"], "oops": 1}', r":2: .*oops"),
        ('{"id": "a", "query": "q", "user": "u", "relevant": ["x"]}', r":2: duplicate query id"),
        ('{"id": "b", "query": "q", "user": "u", "relevant": ["x"], "answer": " "}', r"blank"),
    ],
)
def test_load_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = write_lines(
        tmp_path, '{"id": "a", "query": "q?", "user": "u", "relevant": ["x.md"]}', line
    )
    with pytest.raises(EvalError, match=message):
        load_queries(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="cannot read golden queries"):
        load_queries(tmp_path / "nope.jsonl")


# --- negative questions (nothing relevant: permission probes) ---------------------


def test_load_accepts_negative_questions(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path,
        '{"id": "a", "query": "salary bands?", "user": "sam", "relevant": [],'
        ' "forbidden": ["hr/"]}',
        '{"id": "b", "query": "anything?", "user": "guest", "groups": [], "relevant": {},'
        ' "forbidden": [""]}',
        '{"id": "c", "query": "q?", "user": "u", "relevant": ["x.md"]}',
    )
    probe, nobody, ordinary = load_queries(path)
    assert probe.negative and probe.relevant == {} and probe.forbidden == ["hr/"]
    assert nobody.negative and nobody.forbidden == [""]
    assert nobody.principal().groups == frozenset()
    assert not ordinary.negative


def test_the_empty_forbidden_prefix_forbids_every_document() -> None:
    a = passage("handbook/faq.md", chunk_id="faq#0")
    b = passage("hr/bands.xlsx", chunk_id="bands#0")
    assert find_leaks([a, b], forbidden=[""]) == ["faq#0", "bands#0"]
    assert find_leaks([], forbidden=[""]) == []


def test_a_negative_question_that_returns_a_forbidden_passage_leaks() -> None:
    nobody = query(id="n1", groups=[], relevant=[], forbidden=[""])
    probe = query(id="n2", relevant=[], forbidden=["hr/"])
    returned = {
        "n1": [passage("handbook/faq.md", chunk_id="faq#0")],
        "n2": [passage("handbook/faq.md", chunk_id="faq#1"), passage("hr/b.xlsx", chunk_id="b#0")],
    }
    report = evaluate([nobody, probe], lambda q: returned[q.id]).to_dict()
    assert report["leaks"] == 2
    assert [r["leaks"] for r in report["per_query"]] == [["faq#0"], ["b#0"]]
    assert report["negative"]["leaks"] == 2
    assert report["negative"]["passages_returned"] == 3
    assert report["negative"]["empty_answers"] == 0
    # Nothing relevant: no ranking metric to average.
    assert report["recall@k"] is None and report["ndcg@10"] is None
    json.dumps(report)


def test_negative_questions_leave_the_averages_unchanged() -> None:
    q1 = query(id="q1", relevant={"a.md": 2, "b.md": 1}, answer="twenty seven")
    q2 = query(id="q2", relevant=["c.md"])
    n1 = query(id="n1", relevant=[], forbidden=["hr/"])
    n2 = query(id="n2", groups=[], relevant=[], forbidden=[""])
    returned = {
        "q1": [passage("x.md"), passage("a.md", "twenty seven days")],
        "q2": [passage("c.md")],
        "n1": [passage("a.md", "twenty seven days")],
        "n2": [],
    }

    def search(q: GoldenQuery) -> list[Passage]:
        return returned[q.id]

    positives = evaluate([q1, q2], search).to_dict()
    mixed = evaluate([n1, q1, n2, q2], search).to_dict()
    for key in ("recall@k", "mrr@10", "ndcg@10", "citation_hit_rate"):
        assert mixed[key] == positives[key], key
    assert positives["recall@k"] == pytest.approx(0.75)  # (1/2 + 1) / 2
    assert mixed["queries"] == 4
    assert mixed["leaks"] == positives["leaks"] == 0
    assert [r["negative"] for r in mixed["per_query"]] == [True, False, True, False]


def test_negative_block_counts_how_each_probe_was_answered() -> None:
    probes = [query(id=f"n{i}", relevant=[]) for i in range(4)]
    answers = {
        "n0": Retrieved([], low_confidence=True),
        "n1": Retrieved([passage("a.md"), passage("b.md")], low_confidence=True),
        "n2": Retrieved([passage("a.md")], low_confidence=False),
        "n3": Retrieved([passage("c.md")], low_confidence=True),
    }
    report = evaluate(probes, lambda q: answers[q.id])
    assert report.negative().to_dict() == {
        "questions": 4,
        "empty_answers": 1,
        "low_confidence": 2,
        "confident_answers": 1,
        "leaks": 0,
        "passages_returned": 4,
    }
    # A search without a confidence flag cannot say how the answered probes were judged.
    plain = evaluate(probes, lambda q: list(answers[q.id].passages)).negative()
    assert plain.empty_answers == 1
    assert plain.low_confidence is None and plain.confident_answers is None


def test_may_read_judges_negative_questions_too() -> None:
    probe = query(id="n1", relevant=[])  # no forbidden prefix: the ACL check alone
    p = passage("finance/budget.xlsx", chunk_id="budget#0")
    report = evaluate([probe], lambda _: [p], may_read=lambda q, _: False).to_dict()
    assert report["leaks"] == 1 and report["negative"]["leaks"] == 1


# --- golden-file validation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        # A missing `relevant` stays an error: a typo must not turn a question into a probe.
        ("", r"relevant: Field required"),
        ('"relevant": null', r"relevant: Input should be a valid dictionary"),
        ('"relevant": [], "forbidden": ["  "]', r"`forbidden` prefixes must not be blank"),
        ('"relevant": [], "forbidden": [" hr/"]', r"must not start or end with whitespace"),
        ('"relevant": ["  "]', r"`relevant` paths must not be blank"),
        ('"relevant": ["hr\\\\bands.xlsx"]', r"forward slashes"),
        ('"relevant": ["/srv/docs/a.md"]', r"relative to the source root"),
        ('"relevant": ["hr/../a.md"]', r"'\.' or '\.\.' segments"),
        ('"relevant": {"a.md": 1e999}', r"finite and > 0"),
        ('"relevant": [], "answer": "27 days"', r"negative question .* no `answer`"),
        ('"relevant": ["hr/a.md"], "forbidden": ["hr/"]', r"under a `forbidden` prefix"),
        ('"relevant": ["a.md"], "forbidden": [""]', r"forbids every document"),
        ('"relevant": [], "query": "   "', r"query: Value error, must not be blank"),
        ('"relevant": [], "id": " "', r"id: Value error, must not be blank"),
        ('"relevant": [], "user": "   "', r"user"),
    ],
)
def test_invalid_golden_queries_are_refused_with_the_line(
    tmp_path: Path, fields: str, message: str
) -> None:
    base = {"id": "b", "query": "q", "user": "u"}
    data = json.loads("{" + fields + "}") if fields else {}
    line = json.dumps({**base, **data})
    path = write_lines(
        tmp_path, '{"id": "a", "query": "q?", "user": "u", "relevant": ["x.md"]}', line
    )
    with pytest.raises(EvalError, match=r":2: invalid golden query: .*" + message):
        load_queries(path)


def test_an_empty_golden_file_is_refused(tmp_path: Path) -> None:
    # Zero questions would report zero leaks.
    with pytest.raises(EvalError, match="no golden queries"):
        load_queries(write_lines(tmp_path, "", "   "))


def test_paths_match_in_nfc_whatever_form_each_side_uses() -> None:
    composed = "r\u00e9sum\u00e9s/caf\u00e9.md"  # what a golden file typed by hand holds
    decomposed = unicodedata.normalize("NFD", composed)  # what some file systems store
    assert composed != decomposed
    q = query(relevant=[decomposed], answer="menu")
    hit = passage(composed, "The menu of the day")
    report = evaluate([q], lambda _: [hit]).to_dict()
    assert report["recall@k"] == 1.0 and report["citation_hit_rate"] == 1.0
    leaked = passage(decomposed, chunk_id="cafe#0")
    assert find_leaks([leaked], forbidden=["r\u00e9sum\u00e9s/"]) == ["cafe#0"]
