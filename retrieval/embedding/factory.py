"""Pick the embedding backend named in the configuration (as ``retrieval.index.factory``).

``embedding.backend`` names one of :data:`BACKENDS`: ``"onnx-int8"`` (the
default: ONNX Runtime, int8 weights for documents, fp32 for queries; see
:mod:`retrieval.embedding.onnx_backend`), ``"torch"`` (sentence-transformers,
:mod:`retrieval.embedding.torch_backend`, the one for GPUs), or ``"onnx"`` (fp32,
for comparisons). Every backend implements :class:`retrieval.embedding.base.Embedder`.

:func:`get_embedder` keeps one instance per configuration, so the CLI, the
Dagster resources and retrieval share a single loaded model; :func:`create_embedder`
makes a new one.
"""

from __future__ import annotations

import threading
from pathlib import Path

from retrieval.embedding.base import (
    DEFAULT_MODEL,
    Embedder,
    EmbeddingError,
    canonical_model_name,
    resolve_model_path,
)
from retrieval.embedding.config import EmbeddingConfig
from retrieval.embedding.onnx_backend import OnnxEmbedder
from retrieval.embedding.torch_backend import TorchEmbedder

BACKENDS = ("torch", "onnx-int8", "onnx")
# ``embedding.backend``'s default too (retrieval.embedding.config): chosen by
# measurement, docs/benchmarks.md#embedding-backends.
DEFAULT_BACKEND = "onnx-int8"

_embedders: dict[tuple[str, str, int, str, str], Embedder] = {}
_embedders_lock = threading.Lock()


def _check_backend(backend: str, device: str) -> None:
    if backend not in BACKENDS:
        raise EmbeddingError(
            f"unknown embedding backend {backend!r} (valid: {', '.join(BACKENDS)})"
        )
    if backend != "torch" and device != "cpu":
        raise EmbeddingError(f"the {backend} backend runs on the CPU only, got device {device!r}")


def create_embedder(
    model: str = DEFAULT_MODEL,
    *,
    device: str = "cpu",
    batch_size: int = 32,
    backend: str = DEFAULT_BACKEND,
    cache_dir: Path | None = None,
) -> Embedder:
    """A new, unloaded embedder for ``model`` on ``backend``.

    ``cache_dir`` is where ONNX builds are kept (the torch backend has none).

    :raises EmbeddingError: an unknown backend, an ONNX backend on a GPU device, or a
        bad ``batch_size``.
    """
    _check_backend(backend, device)
    if backend == "torch":
        return TorchEmbedder(model, batch_size=batch_size, device=device)
    return OnnxEmbedder(
        model, quantize=backend == "onnx-int8", batch_size=batch_size, cache_dir=cache_dir
    )


def get_embedder(
    model: str = DEFAULT_MODEL,
    device: str = "cpu",
    batch_size: int = 32,
    backend: str = DEFAULT_BACKEND,
    cache_dir: Path | None = None,
) -> Embedder:
    """The process-wide embedder for this configuration (created unloaded).

    Names that resolve to the same model (``all-MiniLM-L6-v2`` and
    ``sentence-transformers/all-MiniLM-L6-v2``) share one instance.

    :raises EmbeddingError: as :func:`create_embedder`.
    """
    _check_backend(backend, device)
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
            embedder = create_embedder(
                model, device=device, batch_size=batch_size, backend=backend, cache_dir=cache_dir
            )
            _embedders[key] = embedder
        return embedder


def embedder_from_config(config: EmbeddingConfig, *, cache_dir: Path | None = None) -> Embedder:
    """The process-wide embedder for an ``embedding:`` block (see :func:`get_embedder`)."""
    return get_embedder(
        config.model,
        device=config.device,
        batch_size=config.batch_size,
        backend=config.backend,
        cache_dir=cache_dir,
    )


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "create_embedder",
    "embedder_from_config",
    "get_embedder",
]
