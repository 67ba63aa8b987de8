"""The embedding model on ONNX Runtime, optionally with dynamic int8 quantisation.

Same vectors as :class:`retrieval.embedding.torch_backend.TorchEmbedder` (mean pooling,
L2 norm), faster on CPU than with torch, in int8 by far
(docs/benchmarks.md#embedding-backends-latest).

The ONNX file is built locally from the packaged weights, never downloaded:
``torch.onnx.export`` of the transformer (the TorchScript exporter, opset 17,
eager attention: the SDPA export adds NaN-guarding ``Where``/``IsNaN`` nodes
that cost time in every run), then, for ``onnx-int8``, a rewrite for one unpadded
text per run (:mod:`retrieval.embedding.onnx_graph`) and ``quantize_dynamic`` of the
weight MatMuls (QInt8, per channel). Quantising every op type cost too much
accuracy; weight MatMuls only keep the vectors close to torch's. Keeping the
first block in fp32 brought them closer but cost speed and gained no retrieval
quality: queries run on the fp32 graph (:meth:`OnnxEmbedder.encode_query`), and
with that nDCG@10 stayed as good as torch's on both golden sets
(docs/benchmarks.md#why-the-embedding-backend-is-built-this-way). Pooling and
normalisation run in numpy, so the exported graph is the bare transformer.

Runs use single-threaded sessions, one per core, side by side: a 200-word-piece
text is too small for two intra-op threads to share well (one text per run in
int8, see :attr:`OnnxEmbedder.run_size`), and two independent runs embed
more texts per second than one two-thread run on 2 cores.

The build (seconds) happens once per model, backend and toolchain: the result
is cached under ``cache_dir`` (default ``~/.cache/trove/models``) in a folder
named after the model, the backend, :data:`FORMAT_VERSION` and a digest of the
weights and library versions, so an upgrade never loads a stale file. Builds
are atomic (a temporary folder renamed into place), so concurrent processes
never see half a model.

Example::

    emb = OnnxEmbedder("all-MiniLM-L6-v2", quantize=True)
    vectors = emb.encode_documents(["first chunk", "second chunk"])
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import Tokenizer

from retrieval.embedding.base import (
    DEFAULT_MODEL,
    EmbeddingError,
    batch_threads,
    canonical_model_name,
    load_model_tokenizer,
    require_model_folder,
    resolve_model_path,
)
from retrieval.embedding.tokens import rust_tokenizer

if TYPE_CHECKING:
    from tokenizers import Encoding

log = logging.getLogger(__name__)

# Bump when the exported graph or the quantisation recipe changes: old builds
# then live in other folders and are never loaded.
FORMAT_VERSION = 5
OPSET = 17
ONNX_FILE = "model.onnx"
# The fp32 graph an int8 build keeps for queries (see OnnxEmbedder.encode_query).
QUERY_FILE = "query-fp32.onnx"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# ORT fusions the int8 documents' graph runs without: the CPU SkipLayerNormalization
# kernel is slower than the Add + LayerNormalization it replaces (onnx_graph).
INT8_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def default_cache_dir() -> Path:
    """Where built ONNX models are kept unless the caller says otherwise."""
    return Path.home() / ".cache" / "trove" / "models"


@dataclass(frozen=True)
class _Layout:
    """What a sentence-transformers folder says about pooling, length and size."""

    max_seq_length: int
    dimensions: int


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EmbeddingError(f"cannot read {path}: {exc}") from exc


def _layout(model_dir: Path) -> _Layout:
    """Check the model is Transformer + mean Pooling (+ Normalize): what numpy reproduces."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        raise EmbeddingError(
            f"{model_dir} is not a sentence-transformers model folder (no modules.json); "
            "the onnx backends need one"
        )
    modules = _read_json(modules_file)
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise EmbeddingError(
            f"the onnx backends support Transformer + Pooling (+ Normalize) models; "
            f"{model_dir} has modules {kinds}"
        )
    pooling = _read_json(model_dir / modules[1]["path"] / "config.json")
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
    if modes != ["pooling_mode_mean_tokens"]:
        raise EmbeddingError(
            f"the onnx backends support mean pooling only; {model_dir} uses {modes}"
        )
    config = _read_json(model_dir / "config.json")
    st_config = model_dir / "sentence_bert_config.json"
    max_len = _read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    positions = int(config.get("max_position_embeddings", 512))
    return _Layout(
        max_seq_length=min(int(max_len or positions), positions),
        dimensions=int(pooling.get("word_embedding_dimension") or config["hidden_size"]),
    )


def _installed_version(package: str) -> str:
    """``package``'s installed version, read from its metadata: importing torch just to
    name the cache folder cost a serving process seconds and memory
    (docs/benchmarks.md#why-the-embedding-backend-is-built-this-way)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _fingerprint(model_dir: Path, backend: str) -> str:
    """Digest of what the built file depends on: weights, config, backend, toolchain."""
    parts: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "backend": backend,
        **{name: _installed_version(name) for name in ("torch", "onnx", "onnxruntime")},
        "path": str(model_dir),
    }
    for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
        file = model_dir / name
        if file.is_file():
            stat = file.stat()
            parts[name] = [stat.st_size, stat.st_mtime_ns]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def build_dir_for(model: str, backend: str, cache_dir: Path) -> Path:
    """The cache folder a model's ``backend`` build lives in (it may not exist yet)."""
    model_dir = Path(resolve_model_path(model))
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", canonical_model_name(model)).strip("_")
    return cache_dir / f"{slug}-{backend}-v{FORMAT_VERSION}-{_fingerprint(model_dir, backend)}"


# What the exporter and the quantiser say about a build that is known to be fine:
# the tracer's advice on Python booleans in the attention mask (the mask is an
# input, so the traced graph is general), the TorchScript exporter's deprecation
# and its internal logging set-up's (chosen on purpose, see the module
# docstring), the note on negative indices
# (word-piece positions are never negative) and onnxruntime's advice to run its
# shape pre-processing (the recipe quantises weight MatMuls only). Silenced
# only around the build (quiet_build), never globally.
# (message start, category, module the warning is attributed to)
_EXPORT_NOISE: tuple[tuple[str, type[Warning], str], ...] = (
    ("You are using the legacy TorchScript-based ONNX export", DeprecationWarning, ""),
    ("The feature will be removed", DeprecationWarning, r"torch\.onnx\."),
    ("Exporting aten::index operator of advanced indexing", UserWarning, ""),
)
_QUANTIZE_ADVICE = "pre-processing before quantization"


class _DropQuantizeAdvice(logging.Filter):
    """Drops onnxruntime.quantization's advice records (it logs them on the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _QUANTIZE_ADVICE not in record.getMessage()


@contextmanager
def quiet_build() -> Iterator[None]:
    """Silence the known export/quantisation warnings and progress bars while building.

    Only tracer warnings and the messages named in ``_EXPORT_NOISE`` and
    ``_QUANTIZE_ADVICE`` are dropped, and only inside the block: any other
    warning still shows. The root logger gets a temporary stderr handler when
    it has none, so onnxruntime's module-level ``logging.warning`` calls do not
    run ``logging.basicConfig`` and leave a handler on the caller's root logger.
    """
    import torch
    from transformers.utils import logging as hf_logging

    root = logging.getLogger()
    advice_filter = _DropQuantizeAdvice()
    borrowed = logging.lastResort if not root.handlers else None
    bars = hf_logging.is_progress_bar_enabled()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        for message, category, module in _EXPORT_NOISE:
            warnings.filterwarnings("ignore", message, category, module)
        root.addFilter(advice_filter)
        if borrowed is not None:
            root.addHandler(borrowed)
        if bars:
            hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            if bars:
                hf_logging.enable_progress_bar()
            if borrowed is not None:
                root.removeHandler(borrowed)
            root.removeFilter(advice_filter)


def _display_path(path: Path) -> str:
    """``path`` with the home folder written as ``~``, as a user would type it."""
    try:
        return f"~/{path.relative_to(Path.home())}"
    except ValueError:
        return str(path)


def _export(model_dir: Path, target: Path) -> list[str]:
    """Export the bare transformer to ``target``; returns the graph's input names."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager")
    model.eval()
    sample = tokenizer(
        ["an example sentence to trace", "and a second, longer one to pad against"],
        padding=True,
        return_tensors="pt",
    )
    names = [n for n in _INPUTS if n in sample]

    class _LastHiddenState(torch.nn.Module):
        """Calls the model by keyword: positional order differs between architectures."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, tensors, strict=True))).last_hidden_state

    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            _LastHiddenState(),
            tuple(sample[n] for n in names),
            str(target),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={**{n: axes for n in names}, "last_hidden_state": axes},
            opset_version=OPSET,
            dynamo=False,
        )
    return names


def _single_text(fp32: Path) -> None:
    """Rewrite the fp32 export in place for one unpadded text per run
    (:mod:`retrieval.embedding.onnx_graph`), when it has the known layout.

    Both consumers of an int8 build only ever run one text: the int8 graph is
    quantised from this one, and queries run it as is (equal to the export to
    float rounding, and faster per query:
    docs/benchmarks.md#why-the-embedding-backend-is-built-this-way).
    """
    # Deferred, with onnx_graph (which imports onnx at its top): only a build needs onnx.
    import onnx

    # lazy: onnx (the graph rewrite) is needed only while a model is first built
    from retrieval.embedding.onnx_graph import UnsupportedGraph, single_text_graph

    rewritten = fp32.with_name(f"single-text-{fp32.name}")
    try:
        model = single_text_graph(onnx.load(str(fp32)))
        onnx.checker.check_model(model)
    except UnsupportedGraph as exc:
        log.info("int8 builds keep the general graph: %s", exc)
        return
    onnx.save(model, str(rewritten))
    rewritten.replace(fp32)


def _quantize(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        op_types_to_quantize=["MatMul"],
        weight_type=QuantType.QInt8,
        per_channel=True,
        # Shape inference stops at com.microsoft nodes; their outputs are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def build_onnx_model(model: str, backend: str, cache_dir: Path | None = None) -> tuple[Path, float]:
    """The built ONNX file for ``model`` and ``backend`` ("onnx" or "onnx-int8"), and the
    seconds spent building it (0.0 when it was already cached).

    :raises EmbeddingError: unsupported model layout or a failed export/quantisation.
    """
    if backend not in ("onnx", "onnx-int8"):
        raise EmbeddingError(f"unknown onnx backend {backend!r} (valid: onnx, onnx-int8)")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    model_dir = Path(resolve_model_path(model))
    require_model_folder(model, str(model_dir))
    if not model_dir.is_dir():
        raise EmbeddingError(
            f"the onnx backends build from local weights; {model!r} resolves to "
            f"{str(model_dir)!r}, which is not a folder"
        )
    _layout(model_dir)
    final = build_dir_for(model, backend, cache_dir)
    if (final / ONNX_FILE).is_file():  # the build folder appears whole (renamed into place)
        return final / ONNX_FILE, 0.0
    started = time.perf_counter()
    log.info("building the %s model for %s in %s (once)", backend, model, final)
    # Said once, on stderr: the first run of a fresh install otherwise pauses here
    # for seconds without a word (stdout stays the command's answer).
    sys.stderr.write(
        "Preparing the embedding model for ONNX Runtime "
        f"(once, cached in {_display_path(cache_dir)})... "
    )
    sys.stderr.flush()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    except OSError as exc:
        sys.stderr.write("failed\n")
        raise EmbeddingError(f"cannot create the model cache in {cache_dir}: {exc}") from exc
    built = False
    try:
        fp32 = work / (QUERY_FILE if backend == "onnx-int8" else ONNX_FILE)
        try:
            with quiet_build():
                _export(model_dir, fp32)
                if backend == "onnx-int8":
                    _single_text(fp32)
                    _quantize(fp32, work / ONNX_FILE)
        except Exception as exc:  # exporter errors come in many types; name the model
            raise EmbeddingError(
                f"cannot build the {backend} model for {model!r} from {model_dir}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        (work / "build.json").write_text(
            json.dumps({"model": model, "backend": backend, "format": FORMAT_VERSION}),
            encoding="utf-8",
        )
        try:
            work.rename(final)
        except OSError:
            # Another process finished the same build first: use theirs.
            if not (final / ONNX_FILE).is_file():
                raise
        built = True
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not built:
            sys.stderr.write("failed\n")
    seconds = time.perf_counter() - started
    sys.stderr.write(f"done in {seconds:.1f} s\n")
    log.info("built the %s model for %s in %.1f s", backend, model, seconds)
    return final / ONNX_FILE, seconds


def load_rust_tokenizer(
    name: str, model_dir: Path, max_length: int
) -> tuple[Tokenizer, tuple[int, int]]:
    """Model ``name``'s tokenizer from ``model_dir``, cutting at ``max_length`` without
    padding, and the (word piece, token type) ids that pad a batch.

    Read straight from ``tokenizer.json`` with the ``tokenizers`` library: the same
    Rust tokenizer transformers wraps (ids checked equal in the tests), without
    the import of transformers (seconds) that ingestion and serving otherwise pay
    before their first chunk or query. Folders without ``tokenizer.json`` go
    through transformers, whose fast tokenizer converts other formats.
    """
    file = model_dir / "tokenizer.json"
    try:
        if file.is_file():
            tokenizer = Tokenizer.from_file(str(file))
        else:
            backend = rust_tokenizer(load_model_tokenizer(name, str(model_dir)))
            tokenizer = Tokenizer.from_str(backend.to_str())
    except Exception as exc:  # tokenizers raises plain Exception on a bad file
        raise EmbeddingError(f"cannot load the tokenizer of {name!r}: {exc}") from exc
    # Pad as transformers does: the model's pad token, token type 0 (values that
    # the attention mask hides; they only have to be valid ids).
    padding = tokenizer.padding or {}
    pad_token = _special_token(model_dir, "pad_token") or padding.get("pad_token", "[PAD]")
    pad_id = tokenizer.token_to_id(pad_token)
    pad_ids = (
        int(padding.get("pad_id", 0)) if pad_id is None else pad_id,
        int(padding.get("pad_type_id", 0)),
    )
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer, pad_ids


def _special_token(model_dir: Path, key: str) -> str | None:
    """A special token named in ``special_tokens_map.json`` (a str or ``{"content": str}``)."""
    file = model_dir / "special_tokens_map.json"
    if not file.is_file():
        return None
    value = _read_json(file).get(key)
    return value.get("content") if isinstance(value, dict) else value


def _padded_inputs(batch: Sequence[Encoding], pad_ids: tuple[int, int]) -> dict[str, np.ndarray]:
    """The model's int64 inputs for ``batch``, shorter rows padded on the right."""
    longest = max(len(e.ids) for e in batch)
    pad_id, pad_type_id = pad_ids
    inputs = {
        "input_ids": np.full((len(batch), longest), pad_id, dtype=np.int64),
        "attention_mask": np.zeros((len(batch), longest), dtype=np.int64),
        "token_type_ids": np.full((len(batch), longest), pad_type_id, dtype=np.int64),
    }
    for row, encoding in enumerate(batch):
        length = len(encoding.ids)
        inputs["input_ids"][row, :length] = encoding.ids
        inputs["attention_mask"][row, :length] = encoding.attention_mask
        inputs["token_type_ids"][row, :length] = encoding.type_ids
    return inputs


class OnnxEmbedder:
    """:class:`retrieval.embedding.base.Embedder` on ONNX Runtime (fp32, or int8 weights).

    :param model: a sentence-transformers model folder or a name resolving to one
        (MiniLM names resolve to the packaged copy). Needs Transformer + mean Pooling.
    :param quantize: dynamic int8 quantisation of the MatMul weights (``onnx-int8``).
    :param batch_size: texts per forward pass.
    :param cache_dir: where built models are kept (default :func:`default_cache_dir`).
    :raises EmbeddingError: on a bad ``batch_size`` here; on an unsupported model
        or a failed build at ``warm_up()`` or first use.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        quantize: bool = True,
        batch_size: int = 32,
        cache_dir: Path | None = None,
    ) -> None:
        if batch_size < 1:
            raise EmbeddingError(f"batch_size must be >= 1, got {batch_size}")
        self.name = model
        self.path = resolve_model_path(model)
        self.backend = "onnx-int8" if quantize else "onnx"
        self.batch_size = batch_size
        self.device = "cpu"
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.texts_encoded = 0
        self.build_seconds: float | None = None  # set by warm_up(); 0.0 when cached
        self.onnx_path: Path | None = None
        self._layout: _Layout | None = None
        self._tokenizer: Tokenizer | None = None
        self._pad_ids = (0, 0)  # (word piece, token type) that pad a run's shorter rows
        self._loaded: Any = None  # the onnxruntime session, once warm
        self._query_loaded: Any = None  # int8 builds: the fp32 session for queries
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._run_slots: threading.BoundedSemaphore | None = None
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OnnxEmbedder({self.model_id!r}, batch_size={self.batch_size})"

    @property
    def model_id(self) -> str:
        """Differs from the torch backend's: int8 vectors must not share its cache entries."""
        # The format version too: a changed export or quantisation recipe gives
        # other vectors, which must not mix with cached ones.
        return f"{canonical_model_name(self.name)}@{self.path}#{self.backend}-v{FORMAT_VERSION}"

    def warm_up(self) -> None:
        """Build (first time only) and load the documents' model; safe from several threads."""
        if self._loaded is not None:
            return
        with self._lock:
            if self._loaded is None:
                disabled = INT8_DISABLED_OPTIMIZERS if self.backend == "onnx-int8" else ()
                self._loaded = self._load_session(self._built_locked(), disabled)

    def _built_locked(self) -> Path:
        """The built model file (building it the first time); call with ``_lock`` held."""
        if self.onnx_path is None:
            self.onnx_path, self.build_seconds = build_onnx_model(
                self.name, self.backend, self.cache_dir
            )
        return self.onnx_path

    def _load_session(self, path: Path, disabled_optimizers: Sequence[str] = ()) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread per run; parallelism comes from runs side by side (module docstring).
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Threads that spin between runs burn cores other work needs
        # (parsing, chunking, other processes); waking them costs little.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(
                str(path),
                options,
                providers=["CPUExecutionProvider"],
                disabled_optimizers=list(disabled_optimizers) or None,
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EmbeddingError(
                f"cannot load {path} for {self.name!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def _session(self) -> Any:
        self.warm_up()
        return self._loaded

    @property
    def query_ready(self) -> bool:
        """Whether :meth:`encode_query` runs without loading anything first."""
        if self.backend != "onnx-int8":
            return self._loaded is not None
        return self._query_loaded is not None

    def warm_up_queries(self) -> None:
        """Load what :meth:`encode_query` needs (int8 builds: the fp32 query graph too)."""
        self._query_session()

    def _query_session(self) -> Any:
        """The fp32 graph for queries in int8 builds (rewritten for one text, like the
        documents' graph), loaded on the first query without
        the int8 graph (a server never embeds documents)."""
        if self.backend != "onnx-int8":
            return self._session()
        with self._lock:
            if self._query_loaded is None:
                query_file = self._built_locked().parent / QUERY_FILE
                self._query_loaded = self._load_session(query_file)
            return self._query_loaded

    def _runner(self, workers: int) -> ThreadPoolExecutor | None:
        """Threads that run the model side by side (``None``: run inline)."""
        if workers < 2:
            return None
        with self._lock:
            if self._pool is None or self._pool_size != workers:
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
                self._pool = ThreadPoolExecutor(workers, thread_name_prefix="trove-onnx")
                self._pool_size = workers
            return self._pool

    def _model_layout(self) -> _Layout:
        # Read from the model folder's JSON files: known without building the model.
        if self._layout is None:
            require_model_folder(self.name, self.path)
            self._layout = _layout(Path(self.path))
        return self._layout

    @property
    def dimensions(self) -> int:
        return self._model_layout().dimensions

    @property
    def max_seq_length(self) -> int:
        """Word pieces the model reads per input (256 for MiniLM); the rest is cut."""
        return self._model_layout().max_seq_length

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's own Rust tokenizer (``tokenizers.Tokenizer``), cutting inputs at
        :attr:`max_seq_length` and never padding. Loaded without building the ONNX
        model, and without importing transformers when the folder has a
        ``tokenizer.json`` (see :func:`load_rust_tokenizer`)."""
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer, self._pad_ids = load_rust_tokenizer(
                    self.name, Path(self.path), self.max_seq_length
                )
            return self._tokenizer

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: float32, shape ``(len(texts), dimensions)``, unit rows, input order."""
        if isinstance(texts, str):
            raise EmbeddingError("encode_documents takes a sequence of texts, not one str")
        session = self._session()
        dims = self.dimensions
        if len(texts) == 0:
            return np.zeros((0, dims), dtype=np.float32)
        # Longest first, so each batch pads little and the side-by-side runs
        # finish together; rows go back to input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        step = self.run_size
        runs = [order[start : start + step] for start in range(0, len(order), step)]
        out = np.empty((len(texts), dims), dtype=np.float32)

        encoded = self._tokenize(list(texts))

        def run(idx: list[int]) -> np.ndarray:
            return self._encode_batch(session, [encoded[i] for i in idx])

        runner = self._runner(min(batch_threads(), len(runs)))
        results = map(run, runs) if runner is None else runner.map(run, runs)
        for idx, vectors in zip(runs, results, strict=True):
            out[idx] = vectors
        return out

    @property
    def run_size(self) -> int:
        """Texts per model run: ``batch_size`` in fp32, always 1 in int8.

        Dynamic quantisation scales activations per tensor, over the whole batch
        (padding included): batched, a text's int8 vector depended on its batch
        mates (a little off the same text alone). One text per run makes a
        vector a function of its text only, as the embedding cache assumes, and
        was no slower (no padding; 200 word pieces fill the matrix units anyway:
        docs/benchmarks.md#why-the-embedding-backend-is-built-this-way).
        """
        return 1 if self.backend == "onnx-int8" else self.batch_size

    def encode_query(self, text: str) -> np.ndarray:
        """Embed one query on one thread (as ``TorchEmbedder.encode_query``).

        In ``onnx-int8`` queries run on the fp32 graph the build keeps: a query is
        a few word pieces (as fast either way), and only the documents' side then
        carries quantisation error: int8 documents with fp32 queries rank as
        torch does on the golden sets, int8 on both sides lost quality
        (docs/benchmarks.md#why-the-embedding-backend-is-built-this-way).
        """
        if not isinstance(text, str):
            raise EmbeddingError(f"encode_query takes one str, got {type(text).__name__}")
        return self._encode_batch(self._query_session(), self._tokenize([text]))[0]

    def _slots(self) -> threading.BoundedSemaphore:
        """One permit per core: every model run takes one, documents' and queries' alike.

        Per run, not per call: a query waits for one document run (tens of ms),
        never for a whole batch, and two threads' batches never oversubscribe
        the cores.
        """
        if self._run_slots is None:  # checked again under the lock: created once
            with self._lock:
                if self._run_slots is None:
                    self._run_slots = threading.BoundedSemaphore(batch_threads())
        return self._run_slots

    def _tokenize(self, texts: list[str]) -> list[Encoding]:
        """Each text's word pieces, truncated and unpadded (runs pad their own)."""
        return self.tokenizer.encode_batch(texts)

    def _encode_batch(self, session: Any, batch: list[Encoding]) -> np.ndarray:
        inputs = _padded_inputs(batch, self._pad_ids)
        # The single-text graph reads input_ids only; the mask still pools.
        feeds = {i.name: inputs[i.name] for i in session.get_inputs()}
        with self._slots():
            (hidden,) = session.run(["last_hidden_state"], feeds)
        mask = inputs["attention_mask"][:, :, None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        with self._count_lock:
            self.texts_encoded += len(batch)
        return vectors


__all__ = [
    "FORMAT_VERSION",
    "QUERY_FILE",
    "OnnxEmbedder",
    "build_dir_for",
    "build_onnx_model",
    "default_cache_dir",
    "load_rust_tokenizer",
]
