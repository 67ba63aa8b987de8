"""The reference-manual golden sets, their corpus preparation and `trove bench quality`.

The set checks need no corpus (every relevant path must be a page the preparation
script converts); the conversion and the benchmark itself need the Debian
packages (`python scripts/prepare_reference_corpora.py --install`) and skip
cleanly, with the command, where they are absent.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from retrieval.evaluate import load_queries
from trove.bench.quality import GOLDEN_SETS, golden_set_paths, summarise
from trove.config import load_settings

PROJECT = Path(__file__).resolve().parents[2]
REFERENCE_SETS = ("python-library", "postgresql-manual")


def _prepare_module():
    spec = importlib.util.spec_from_file_location(
        "prepare_reference_corpora", PROJECT / "scripts" / "prepare_reference_corpora.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


prepare = _prepare_module()


@pytest.mark.parametrize("name", REFERENCE_SETS)
def test_golden_set_is_large_graded_and_names_only_converted_pages(name):
    _, queries = golden_set_paths(name)
    golden = load_queries(queries)
    answerable = [q for q in golden if not q.negative]
    assert len(answerable) >= 50
    assert sum(any(g != 1 for g in q.relevant.values()) for q in golden) >= 5  # some graded
    pages = {f"{stem}.md" for stem in prepare.listed_pages(prepare.CORPORA[name])}
    for q in golden:
        assert set(q.relevant) <= pages, q.id
        assert all(p in pages for p in q.forbidden), q.id
    assert len({q.query.casefold() for q in golden}) == len(golden)


def test_negative_questions_ask_for_what_the_asker_may_not_read():
    config, queries = golden_set_paths("postgresql-manual")
    settings = load_settings(config)
    rules = {r.match for r in settings.sources[0].acl.rules}
    negatives = [q for q in load_queries(queries) if q.negative]
    assert negatives
    for q in negatives:
        assert "dba" not in q.groups and set(q.forbidden) <= rules


def test_markdown_conversion_keeps_headings_signatures_and_code():
    spec = prepare.CORPORA["python-library"]
    html = b"""<html><body><div class="nav">skip me</div><div class="body" role="main">
      <h1>json \xe2\x80\x94 JSON encoder<a class="headerlink" href="#">\xc2\xb6</a></h1>
      <p>Some <em>inline</em> text.</p>
      <dl><dt>json.dumps(obj, *, indent=None)</dt><dd><p>Serialize <code>obj</code>.</p></dd></dl>
      <ul><li>first</li><li><p>second</p></li></ul>
      <pre>&gt;&gt;&gt; json.dumps([1])</pre>
    </div></body></html>"""
    text = prepare.to_markdown(html, spec)
    assert text.splitlines()[0] == "# json \u2014 JSON encoder"
    assert "\u00b6" not in text and "skip me" not in text
    assert "json.dumps(obj, *, indent=None)" in text
    assert "Some inline text." in text and "- first" in text and "second" in text
    assert "```\n>>> json.dumps([1])\n```" in text


def test_corpora_are_prepared_outside_the_project_only(tmp_path):
    assert prepare.main(["--out", str(PROJECT / "corpora-here")]) == 2
    assert not (PROJECT / "corpora-here").exists()


def test_unknown_corpus_is_refused():
    assert prepare.main(["no-such-corpus"]) == 2


@pytest.mark.parametrize("name", REFERENCE_SETS)
def test_preparation_is_reproducible(tmp_path, name):
    spec = prepare.CORPORA[name]
    if prepare.package_version(spec.package) is None or not spec.html_dir.is_dir():
        pytest.skip(f"{spec.package} absent: python scripts/prepare_reference_corpora.py --install")
    first = prepare.prepare(spec, tmp_path / "a", install=False)
    second = prepare.prepare(spec, tmp_path / "b", install=False)
    assert first["digest"] == second["digest"] and first["pages"] == len(prepare.listed_pages(spec))
    written = tmp_path / "a" / name
    for file, digest in first["files"].items():
        assert hashlib.sha256((written / file).read_bytes()).hexdigest() == digest
    assert json.loads((written / "MANIFEST.json").read_text())["version"] == first["version"]


def test_summary_ranks_by_the_worst_set():
    def row(setting, ndcg, recall):
        return {"system": "trove", "setting": setting, "ndcg@10": ndcg, "recall@10": recall}

    sets = {
        "a": {"rows": [row("steady", 0.80, 0.9), row("spiky", 0.99, 1.0)]},
        "b": {"rows": [row("steady", 0.81, 0.9), row("spiky", 0.70, 0.8)]},
        "c": {"skipped": "no index"},
    }
    summary = summarise(sets, 10)
    assert [s["setting"] for s in summary] == ["steady", "spiky"]
    assert summary[0]["worst_ndcg@10"] == 0.80 and summary[1]["mean_ndcg@10"] == 0.845
    assert summary[1]["worst_recall@10"] == 0.8


@pytest.mark.slow
def test_bench_quality_runs_trove_and_the_peer_on_every_ingested_set():
    from trove.bench.quality import run

    result = run(GOLDEN_SETS, k=10)
    measured = {n: s for n, s in result["sets"].items() if "rows" in s}
    if not measured:
        pytest.skip("no golden-set index: prepare the corpora and `trove ingest -c` each set")
    for name, s in measured.items():
        rows = {(r["system"], r["setting"]): r for r in s["rows"]}
        peer = rows[("llamaindex", "QueryFusionRetriever reciprocal_rerank")]
        assert all(r["leaks"] == 0 for r in s["rows"]), name
        assert peer["ndcg@10"] > 0.5, name  # the peer really ran on the same chunks
        capped = [r for (sys_, label), r in rows.items() if sys_ == "trove" and "1/doc" in label]
        assert all(r["distinct_documents"] == 10 for r in capped), name
