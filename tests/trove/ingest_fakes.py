"""A fast embedder for tests that run `trove ingest` end to end (Dagster, parser, index).

Deterministic hash vectors and a count of every text embedded; the tokenizer
(for chunking) is the packaged MiniLM's, which loads without the model.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from retrieval.embedding.base import load_model_tokenizer, resolve_model_path

DIM = 16


class CountingEmbedder:
    model_id = "counting-embedder@test"
    dimensions = DIM
    max_seq_length = 256

    def __init__(self) -> None:
        self.texts_encoded = 0
        self._tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            name = "all-MiniLM-L6-v2"
            self._tokenizer = load_model_tokenizer(name, resolve_model_path(name))
        return self._tokenizer

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        self.texts_encoded += len(texts)
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self.encode_query(text)
        return out

    def encode_query(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
        return v / np.linalg.norm(v)


def use_embedder(monkeypatch, embedder: CountingEmbedder) -> None:
    """Make every Dagster asset of `trove ingest` use ``embedder``."""
    import trove.wiring

    monkeypatch.setattr(trove.wiring, "build_embedder", lambda *a, **k: embedder)
