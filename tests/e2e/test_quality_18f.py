"""Retrieval quality on the 18F handbook (../shared/corpora) with its golden set.

The golden set is data, so its checks are fast: questions paraphrased (not
copied), answers present in the documents cited, and the ACL scenario in
``benchmarks/18f-handbook/trove.yaml`` letting each asker read what is relevant
and nothing under a ``forbidden`` prefix. The slow test ingests the whole
handbook with the real parser, model and Dagster, then checks that hybrid search
beats lexical-only and dense-only search with zero leaks.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from retrieval.config import RetrievalConfig
from retrieval.evaluate import GoldenQuery, evaluate, load_queries, normalise_text
from trove.config import load_settings

pytestmark = pytest.mark.corpus

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "18f-handbook"
CONFIG = BENCH_DIR / "trove.yaml"
QUERIES = BENCH_DIR / "queries.jsonl"
GROUPS = {"all-staff", "supervisors", "hr", "operations"}


@pytest.fixture(scope="module")
def corpus(shared_corpora) -> Path:
    return shared_corpora / "18f-handbook"


@pytest.fixture(scope="module")
def golden() -> list[GoldenQuery]:
    return load_queries(QUERIES)


@cache
def plain_text(path: Path) -> str:
    """What a reader sees of a Markdown page: no front matter, link targets or markup."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)
    text = re.sub(r"\{%.*?%\}", " ", text, flags=re.S)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", " ", text)
    return normalise_text(re.sub(r"[*`\\]", "", text))


def test_config_points_at_the_shared_corpus(corpus):
    settings = load_settings(CONFIG)
    assert settings.sources[0].path == corpus.resolve()
    assert settings.sources[0].include == ["**/*.md"]


def test_golden_set_is_large_and_covers_every_group(golden):
    assert len(golden) >= 40
    asked_as = {g for q in golden for g in q.groups}
    assert asked_as == GROUPS
    assert sum(1 for q in golden if q.forbidden) >= 4
    assert all(q.answer for q in golden)


def test_every_answer_occurs_in_a_relevant_document(golden, corpus):
    for q in golden:
        assert all((corpus / p).is_file() for p in q.relevant), q.id
        texts = [plain_text(corpus / p) for p in q.relevant]
        assert any(normalise_text(q.answer) in t for t in texts), f"{q.id}: {q.answer!r}"


def test_questions_are_paraphrased_not_copied(golden, corpus):
    """No run of six words of a question appears in the document that answers it."""
    for q in golden:
        words = re.findall(r"[a-z0-9']+", normalise_text(q.query))
        runs = {" ".join(words[i : i + 6]) for i in range(len(words) - 5)}
        for path in q.relevant:
            text = " ".join(re.findall(r"[a-z0-9']+", plain_text(corpus / path)))
            copied = [r for r in runs if r in text]
            assert not copied, f"{q.id} copies {copied} from {path}"


def test_acl_scenario_lets_askers_read_relevant_and_never_forbidden(golden, corpus):
    from core.acl_policy import AclPolicy

    policy = AclPolicy.from_config(load_settings(CONFIG).sources[0].acl)
    files = [p.relative_to(corpus).as_posix() for p in corpus.rglob("*.md")]
    for q in golden:
        principal = q.principal()
        for path in q.relevant:
            assert policy.acl_for_path(path).permits(principal), f"{q.id}: cannot read {path}"
        for prefix in q.forbidden:
            under = [f for f in files if f.startswith(prefix)]
            assert under, f"{q.id}: forbidden prefix {prefix!r} matches no document"
            assert not any(policy.acl_for_path(f).permits(principal) for f in under), q.id


@pytest.fixture(scope="module")
def ingested(corpus, tmp_path_factory):
    """The whole handbook ingested with the benchmark's ACLs and the default backend."""
    from trove.ingest import run_ingest

    work = tmp_path_factory.mktemp("handbook")
    raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    raw["sources"][0]["path"] = str(corpus)
    raw["index"] = {"backend": "embedded", "path": str(work / "index")}
    raw["state"] = {"path": str(work / "state")}
    config = work / "trove.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    summary = run_ingest(config)["sources"]["handbook"]
    return load_settings(config), summary


@pytest.mark.slow
@pytest.mark.model
def test_hybrid_beats_both_single_retrievers_without_leaks(ingested, golden):
    from retrieval.embedding.factory import get_embedder
    from retrieval.index.factory import open_index
    from retrieval.search import Searcher

    settings, summary = ingested
    assert summary["documents_parsed"] >= 230 and summary["chunks_written"] > 2000
    cfg = settings.embedding
    embedder = get_embedder(cfg.model, batch_size=cfg.batch_size, backend=cfg.backend)
    index = open_index(settings.index)
    defaults = RetrievalConfig()
    searcher = Searcher(
        index,
        embedder,
        fusion=defaults.fusion,
        rrf_k=defaults.rrf_k,
        dense_weight=defaults.dense_weight,
        candidates=defaults.candidates,
    )

    def may_read(q, passage) -> bool:
        records = index.get_chunks([passage.chunk_id])
        return bool(records) and records[0].acl.permits(q.principal())

    try:
        reports = {
            mode: evaluate(
                golden,
                lambda q, m=mode: searcher.search(q.query, q.principal(), k=10, mode=m),
                may_read=may_read,
            )
            for mode in ("lexical", "dense", "hybrid")
        }
    finally:
        index.close()
    for mode, report in reports.items():
        assert report.leaks == 0, mode
    hybrid, lexical, dense = (reports[m] for m in ("hybrid", "lexical", "dense"))
    assert hybrid.mean("ndcg") > max(lexical.mean("ndcg"), dense.mean("ndcg"))
    assert hybrid.mean("reciprocal_rank") > max(
        lexical.mean("reciprocal_rank"), dense.mean("reciprocal_rank")
    )
    assert hybrid.mean("recall") >= max(lexical.mean("recall"), dense.mean("recall"))
    assert hybrid.citation_hit_rate >= 0.6
