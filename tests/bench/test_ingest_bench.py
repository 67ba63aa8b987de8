"""`trove bench ingest`: the JSON contract on a few real documents, and the issue's bars (slow)."""

from __future__ import annotations

import json

import pytest

from trove.bench.ingest import BenchError, _StageClock, corpus_files, run

CONTRACT = {"chunks", "chunks_per_s", "encoder_chunks_per_s", "llamaindex_chunks_per_s", "backend"}


def test_a_missing_corpus_or_bad_count_is_a_clear_error(tmp_path):
    with pytest.raises(BenchError, match="benchmark corpus not found at"):
        corpus_files(tmp_path / "absent", None)
    (tmp_path / "a.md").write_text("# A\n\ntext\n")
    with pytest.raises(BenchError, match="max_documents must be >= 1, got 0"):
        corpus_files(tmp_path, 0)
    with pytest.raises(BenchError, match="no Markdown files"):
        corpus_files(_empty(tmp_path), None)


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("not markdown")
    return folder


def test_corpus_files_are_markdown_in_path_order_and_capped(tmp_path):
    for name in ("b/two.md", "a/one.md", "c.md", "skip.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("# T\n\nbody\n")
    assert [p.relative_to(tmp_path).as_posix() for p in corpus_files(tmp_path, None)] == [
        "a/one.md",
        "b/two.md",
        "c.md",
    ]
    assert len(corpus_files(tmp_path, 2)) == 2


def test_stage_clock_sums_each_stage():
    clock = _StageClock()
    clock.start("parse", 3)
    clock.advance("parse")
    clock.finish("parse")
    clock.start("parse", 1)
    clock.finish("parse")
    clock.finish("never-started")
    assert set(clock.seconds) == {"parse"} and clock.seconds["parse"] >= 0


@pytest.mark.model
@pytest.mark.corpus
def test_small_run_prints_the_contract_and_counts_what_the_index_holds(shared_corpora, tmp_path):
    from retrieval.index.embedded import EmbeddedIndex

    result = run(
        backend="onnx-int8",
        max_documents=3,
        peers=True,
        corpus=shared_corpora / "18f-handbook",
        workdir=tmp_path,
    )
    json.dumps(result)  # JSON-able
    assert set(result) >= CONTRACT
    assert result["backend"] == "onnx-int8"
    assert result["documents"] == 3
    index = EmbeddedIndex.open(tmp_path / "index")
    try:
        assert result["chunks"] == index.stats().chunks > 0
    finally:
        index.close()
    assert result["chunks_per_s"] > 0 and result["encoder_chunks_per_s"] > 0
    assert result["llamaindex_chunks_per_s"] > 0 and result["llamaindex_chunks"] > 0
    assert {"parse", "chunk", "embed"} <= set(result["stages_s"])
    assert sum(result["stages_s"].values()) <= result["ingest_s"]


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.corpus
def test_full_handbook_meets_the_ingest_bars(shared_corpora):
    result = run(
        backend="onnx-int8", max_documents=None, peers=True, corpus=shared_corpora / "18f-handbook"
    )
    print(json.dumps(result))
    assert result["chunks"] > 2000
    assert result["chunks_per_s"] >= 0.85 * result["encoder_chunks_per_s"]
    assert result["chunks_per_s"] >= 2.0 * result["llamaindex_chunks_per_s"]
