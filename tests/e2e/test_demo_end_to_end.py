"""The whole path on the bundled demo corpus, with the real parser, model, Dagster and index.

Ingest once (module fixture), then check what a user of each group sees, that
outsiders never see restricted chunks, that citations slice the parsed text
exactly, that golden-query quality holds with zero leaks, and that a second
ingest of unchanged files embeds nothing.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from core.acl import Principal
from core.acl_policy import AclPolicy
from pipelines.parse import parse_file
from retrieval.embedding.factory import get_embedder
from retrieval.evaluate import evaluate, load_queries
from retrieval.index.factory import open_index
from retrieval.search import Searcher
from trove import demo
from trove.cli import app
from trove.config import load_settings
from trove.ingest import run_ingest

pytestmark = pytest.mark.model

# Queries aimed squarely at each restricted folder's content.
AIMED = {
    "hr/": [
        "salary bands pay range senior engineer Rotterdam",
        "employee relations case investigation",
        "performance review calendar calibration",
    ],
    "finance/": [
        "quarterly budget by department",
        "vendor payment terms net days",
        "board deck revenue results",
    ],
    "security/": [
        "incident response plan severity escalation",
        "access review schedule quarterly",
        "vulnerability disclosure reward",
    ],
    "engineering/": [
        "on-call runbook paging rota",
        "postmortem root cause outage",
        "deploy checklist rollback",
    ],
}
OUTSIDER = Principal.of("alex", ["all-staff"])


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    config = demo.prepare(workdir)
    first = run_ingest(config)["sources"]["demo"]
    second = run_ingest(config)["sources"]["demo"]
    settings = load_settings(config)
    index = open_index(settings.index)
    embedder = get_embedder(settings.embedding.model)
    searcher = Searcher(index, embedder)
    yield {
        "config": config,
        "settings": settings,
        "first": first,
        "second": second,
        "index": index,
        "searcher": searcher,
        "policy": AclPolicy.from_config(settings.sources[0].acl),
        "corpus": workdir / "corpus",
    }
    index.close()


def test_first_ingest_indexes_every_document(ingested):
    first = ingested["first"]
    n_files = sum(1 for p in ingested["corpus"].rglob("*") if p.is_file())
    assert first["documents_seen"] == n_files
    assert first["documents_failed"] == []
    assert first["documents_parsed"] == n_files
    assert first["added"] == n_files
    assert first["chunks_written"] >= n_files
    assert first["chunks_embedded"] > 0
    assert ingested["index"].stats().documents == n_files


def test_second_ingest_of_unchanged_files_embeds_nothing(ingested):
    second = ingested["second"]
    assert second["chunks_embedded"] == 0
    assert second["documents_parsed"] == 0
    assert second["chunks_written"] == 0
    assert second["unchanged"] == ingested["first"]["documents_seen"]
    assert ingested["index"].stats().chunks == ingested["first"]["chunks_written"]


def test_each_group_sees_its_own_documents(ingested):
    searcher, policy = ingested["searcher"], ingested["policy"]
    members = {
        "hr/": Principal.of("dana", ["all-staff", "hr"]),
        "finance/": Principal.of("priya", ["all-staff", "finance"]),
        "security/": Principal.of("omar", ["all-staff", "security"]),
        "engineering/": Principal.of("sam", ["all-staff", "engineering"]),
    }
    for folder, principal in members.items():
        for query in AIMED[folder]:
            passages = searcher.search(query, principal, k=5)
            paths = [p.citation.path for p in passages]
            assert any(path.startswith(folder) for path in paths), (folder, query, paths)
            for path in paths:
                assert policy.acl_for_path(path).permits(principal)


@pytest.mark.parametrize("folder", sorted(AIMED))
def test_outsiders_never_get_restricted_chunks_even_when_aiming_at_them(ingested, folder):
    searcher, policy = ingested["searcher"], ingested["policy"]
    for query in AIMED[folder]:
        passages = searcher.search(query, OUTSIDER, k=50)
        assert passages, "an all-staff user still gets the handbook"
        for p in passages:
            assert not p.citation.path.startswith(folder), (query, p.citation.path)
            assert policy.acl_for_path(p.citation.path).permits(OUTSIDER)


def test_denied_user_gets_nothing_from_hr_even_as_a_member(ingested):
    mallory = Principal.of("mallory", ["all-staff", "hr"])
    for query in AIMED["hr/"]:
        paths = [p.citation.path for p in ingested["searcher"].search(query, mallory, k=50)]
        assert not any(path.startswith("hr/") for path in paths), paths


def test_citation_spans_slice_the_parsed_text_exactly(ingested):
    searcher, corpus = ingested["searcher"], ingested["corpus"]
    everyone = Principal.of(
        "root-free", ["all-staff", "hr", "finance", "security", "engineering", "leadership"]
    )
    parsed_cache: dict[str, str] = {}
    checked = 0
    for queries in AIMED.values():
        for query in queries:
            for p in searcher.search(query, everyone, k=8):
                c = p.citation
                if c.path not in parsed_cache:
                    parsed_cache[c.path] = parse_file(
                        corpus / c.path, doc_id=c.doc_id, version=c.doc_version
                    ).text
                assert parsed_cache[c.path][c.char_start : c.char_end] == p.text
                assert c.title and c.uri.startswith("file://") and c.doc_version
                if c.path.endswith((".pdf", ".pptx")):
                    assert c.pages, f"{c.path} has pages"
                checked += 1
    assert checked >= 50


def test_golden_queries_quality_and_zero_leaks(ingested):
    searcher, index = ingested["searcher"], ingested["index"]
    queries = load_queries(demo.QUERIES_FILE)

    def may_read(q, passage):
        record = index.get_chunks([passage.chunk_id])[0]
        return record.acl.permits(q.principal())

    report = evaluate(
        queries, lambda q: searcher.search(q.query, q.principal(), k=10), k=10, may_read=may_read
    ).to_dict()
    assert report["leaks"] == 0
    assert report["recall@k"] >= 0.85, report
    assert report["mrr@10"] >= 0.6, report
    assert report["citation_hit_rate"] >= 0.7, report


def test_cli_search_and_eval_json_contracts(ingested):
    runner = CliRunner()
    config = str(ingested["config"])
    result = runner.invoke(
        app,
        [
            "search",
            "pay range senior engineer Rotterdam",
            "--config",
            config,
            "--user",
            "dana",
            "--groups",
            "all-staff,hr",
            "-k",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["results"]) == 3
    first = data["results"][0]
    assert {"chunk_id", "doc_id", "text", "score", "citation"} <= set(first)
    assert {
        "title",
        "uri",
        "path",
        "section",
        "pages",
        "char_start",
        "char_end",
        "doc_version",
    } <= set(first["citation"])

    result = runner.invoke(
        app, ["eval", "--queries", str(demo.QUERIES_FILE), "--config", config, "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {
        "queries",
        "recall@k",
        "mrr@10",
        "ndcg@10",
        "citation_hit_rate",
        "leaks",
        "latency_ms",
        "per_query",
    } <= set(report)
    assert report["leaks"] == 0
    assert set(report["latency_ms"]) == {"p50", "p95"}

    result = runner.invoke(
        app, ["eval", "--stages", "--queries", str(demo.QUERIES_FILE), "--config", config]
    )
    assert result.exit_code == 0, result.output
    stages = json.loads(result.stdout[result.stdout.index("{") :])
    assert {"fusion", "fusion+diversify"} <= set(stages)
    assert all(stages[name]["leaks"] == 0 for name in ("fusion", "fusion+diversify"))


def test_cli_reports_bad_input_clearly(ingested, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app, ["search", "x", "--config", str(tmp_path / "missing.yaml"), "--user", "u"]
    )
    assert result.exit_code == 2
    assert "config file not found" in result.output
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "a"}\n')
    result = runner.invoke(
        app, ["eval", "--queries", str(bad), "--config", str(ingested["config"])]
    )
    assert result.exit_code == 2
    assert "q.jsonl:1" in result.output


def test_ingest_json_summary_shape(ingested):
    result = CliRunner().invoke(app, ["ingest", "--config", str(ingested["config"]), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["sources"]["demo"]
    for key in (
        "documents_seen",
        "documents_parsed",
        "documents_failed",
        "chunks_written",
        "chunks_embedded",
    ):
        assert key in summary
    assert summary["chunks_embedded"] == 0
