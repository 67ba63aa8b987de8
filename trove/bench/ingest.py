"""`trove bench ingest`: end-to-end ingestion throughput against the bare encoder and LlamaIndex.

Three timings in one process, on the same documents (the 18F handbook beside the
project, or its first ``max_documents`` files in path order):

* **ingest** — ``trove ingest``'s path (:func:`trove.ingest.run_ingest`: the
  Dagster graph in-process) on a fresh state and index folder. ``chunks_per_s``
  is chunks embedded / wall time of the whole run: scan, parse, chunk, tag,
  embed, write, Dagster's own work.
* **encoder** — ``encode_documents`` over exactly the texts the ingest embedded
  (rebuilt with the same parser and chunker, and checked against the embedding
  cache's keys), timed alone: the ceiling for ``chunks_per_s``.
* **LlamaIndex** — ``IngestionPipeline([SentenceSplitter, HuggingFaceEmbedding])``
  with the same model (torch, as LlamaIndex ships it) and batch size, over the
  same files read by ``SimpleDirectoryReader``; splitter budget 200 word pieces
  of the same tokenizer, like Trove's chunker.

The embedding model is loaded (and, for ONNX, built) before any clock starts, in
every system: a one-off per process, reported as ``model_load_s``. Everything
else, imports of the parsers included, is timed.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from trove.bench.errors import BenchError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "corpora" / "18f-handbook"
SOURCE = "handbook"
INCLUDE = "**/*.md"


class _StageClock:
    """A progress sink that records when each long stage (parse, chunk, embed) starts and ends."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self, task: str, total: int) -> None:
        with self._lock:
            self.started[task] = time.perf_counter()

    def advance(self, task: str, amount: int = 1) -> None:
        pass

    def finish(self, task: str) -> None:
        with self._lock:
            begun = self.started.pop(task, None)
            if begun is not None:
                self.seconds[task] = self.seconds.get(task, 0.0) + time.perf_counter() - begun


@contextmanager
def _clocked() -> Iterator[_StageClock]:
    from pipelines import progress

    clock = _StageClock()
    progress.set_sink(clock)
    try:
        yield clock
    finally:
        progress.set_sink(None)


def corpus_files(corpus: Path, max_documents: int | None) -> list[Path]:
    """The benchmark's documents: Markdown files under ``corpus`` in path order."""
    if not corpus.is_dir():
        raise BenchError(
            f"benchmark corpus not found at {corpus} (the 18F handbook lives in "
            "../shared/corpora/18f-handbook beside the project)"
        )
    if max_documents is not None and max_documents < 1:
        raise BenchError(f"max_documents must be >= 1, got {max_documents}")
    files = sorted(p for p in corpus.rglob("*.md") if p.is_file())
    if not files:
        raise BenchError(f"no Markdown files under {corpus}")
    return files[:max_documents] if max_documents else files


def _prepare(workdir: Path, corpus: Path, files: list[Path], backend: str) -> Path:
    """A trove.yaml in ``workdir`` over ``files`` (copied when only a subset is used)."""
    source_dir = corpus
    if len(files) < len(list(corpus.rglob("*.md"))):
        source_dir = workdir / "corpus"
        for file in files:
            target = source_dir / file.relative_to(corpus)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
    config = {
        "index": {"backend": "embedded", "path": str(workdir / "index")},
        "state": {"path": str(workdir / "state")},
        "embedding": {"backend": backend},
        "sources": [
            {
                "name": SOURCE,
                "type": "filesystem",
                "path": str(source_dir),
                "include": [INCLUDE],
                "acl": {"default": {"allow_groups": ["all-staff"]}},
            }
        ],
    }
    path = workdir / "trove.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _embedded_texts(settings: Any, embedder: Any) -> list[str]:
    """The chunk texts the ingest embedded, rebuilt with the same parser and chunker."""
    from connectors.filesystem import FilesystemConnector
    from pipelines.chunk import HFTokenCounter, chunk_document
    from pipelines.errors import ParseError
    from pipelines.parse import parse_document
    from pipelines.store import EmbeddingCache, text_hash

    counter = HFTokenCounter(embedder.tokenizer)
    texts: dict[str, str] = {}
    for doc in FilesystemConnector(settings.sources[0].scope()).scan(known={}).documents:
        try:
            parsed = parse_document(doc)
        except ParseError:
            continue  # the ingest recorded the same failure and embedded nothing for it
        for chunk in chunk_document(
            parsed,
            counter,
            max_tokens=settings.chunking.max_tokens,
            max_seq_length=embedder.max_seq_length,
            min_tokens=settings.chunking.min_tokens,
        ):
            texts.setdefault(
                text_hash(embedder.model_id, chunk.embedding_text), chunk.embedding_text
            )
    cache = EmbeddingCache.in_state_dir(settings.state.path)
    try:
        found = cache.get_many(sorted(texts))
    finally:
        cache.close()
    if len(found) != len(texts):
        raise BenchError(
            f"re-chunking gave {len(texts)} distinct texts but only {len(found)} are in the "
            "ingest's embedding cache: the encoder would not see the same chunks"
        )
    return list(texts.values())


def _time_encoder(embedder: Any, texts: list[str]) -> float:
    started = time.perf_counter()
    embedder.encode_documents(texts)
    return time.perf_counter() - started


def _llamaindex(files: list[Path], model_path: str, batch_size: int, tokenizer: Any) -> dict:
    """Chunks and seconds of LlamaIndex's IngestionPipeline on ``files`` (model preloaded)."""
    try:
        from llama_index.core import Document
        from llama_index.core.ingestion import IngestionPipeline
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    except ImportError as exc:
        raise BenchError(
            "the LlamaIndex peer needs llama-index-core and llama-index-embeddings-huggingface "
            f"(or run with --no-peers): {exc}"
        ) from exc

    from tokenizers import Tokenizer

    from retrieval.embedding.tokens import rust_tokenizer

    embed = HuggingFaceEmbedding(model_name=model_path, device="cpu", embed_batch_size=batch_size)
    # The model's own word pieces, untruncated (as Trove's chunker counts them).
    pieces = Tokenizer.from_str(rust_tokenizer(tokenizer).to_str())
    pieces.no_truncation()
    splitter = SentenceSplitter(
        chunk_size=200,
        chunk_overlap=0,
        tokenizer=lambda text: pieces.encode(text, add_special_tokens=False).ids,
    )
    pipeline = IngestionPipeline(transformations=[splitter, embed])
    started = time.perf_counter()
    # The same files as text; LlamaIndex's own reader would do the same for Markdown.
    documents = [
        Document(text=file.read_text(encoding="utf-8"), metadata={"file_path": str(file)})
        for file in files
    ]
    nodes = pipeline.run(documents=documents)
    seconds = time.perf_counter() - started
    return {"chunks": len(nodes), "seconds": seconds}


def run(
    *,
    backend: str | None,
    max_documents: int | None,
    peers: bool,
    corpus: Path | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Run the ingest benchmark; returns the JSON-able result (see the module docstring).

    :param backend: ``"torch"`` or ``"onnx-int8"``; ``None`` uses the configuration default.
    :param max_documents: use only the first N Markdown files (path order).
    :param peers: also time LlamaIndex's IngestionPipeline on the same files.
    :param corpus: the document folder (default: ``../shared/corpora/18f-handbook``).
    :param workdir: keep state and index here (default: a temporary folder, removed after).
    :raises BenchError: corpus missing, or the re-chunked texts disagree with the ingest.
    """
    from core.runtime import configure_offline_environment
    from retrieval.embedding.base import resolve_model_path
    from retrieval.embedding.config import EmbeddingConfig
    from retrieval.embedding.factory import get_embedder
    from trove.config import load_settings
    from trove.ingest import run_ingest

    configure_offline_environment()
    backend = backend or EmbeddingConfig().backend
    files = corpus_files(Path(corpus) if corpus else DEFAULT_CORPUS, max_documents)
    keep = workdir is not None
    work = (
        Path(workdir)
        if workdir is not None
        else Path(tempfile.mkdtemp(prefix="trove-bench-ingest-"))
    )
    work.mkdir(parents=True, exist_ok=True)
    try:
        config = _prepare(work, Path(corpus) if corpus else DEFAULT_CORPUS, files, backend)
        settings = load_settings(config)
        cfg = settings.embedding
        embedder = get_embedder(
            cfg.model, device=cfg.device, batch_size=cfg.batch_size, backend=cfg.backend
        )
        loading = time.perf_counter()
        embedder.warm_up()
        model_load_s = time.perf_counter() - loading

        with _clocked() as clock:
            started = time.perf_counter()
            summary = run_ingest(config, settings=settings)["sources"][SOURCE]
            ingest_s = time.perf_counter() - started
        chunks = int(summary["chunks_embedded"])
        if chunks == 0:
            raise BenchError(f"the ingest embedded no chunks from {len(files)} documents")

        texts = _embedded_texts(settings, embedder)
        if len(texts) != chunks:
            raise BenchError(
                f"the ingest embedded {chunks} chunks but re-chunking found {len(texts)}"
            )
        encoder_s = _time_encoder(embedder, texts)

        result: dict[str, Any] = {
            "chunks": chunks,
            "chunks_per_s": round(chunks / ingest_s, 2),
            "encoder_chunks_per_s": round(chunks / encoder_s, 2),
            "llamaindex_chunks_per_s": None,
            "backend": backend,
            "documents": len(files),
            "documents_failed": len(summary["documents_failed"]),
            "ingest_s": round(ingest_s, 2),
            "encoder_s": round(encoder_s, 2),
            "ratio_to_encoder": round(encoder_s / ingest_s, 3),
            "stages_s": {k: round(v, 2) for k, v in sorted(clock.seconds.items())},
            "model_load_s": round(model_load_s, 2),
            "model_build_s": getattr(embedder, "build_seconds", None),
        }
        if peers:
            peer = _llamaindex(
                files, resolve_model_path(cfg.model), cfg.batch_size, embedder.tokenizer
            )
            result["llamaindex_chunks_per_s"] = round(peer["chunks"] / peer["seconds"], 2)
            result["llamaindex_chunks"] = peer["chunks"]
            result["llamaindex_s"] = round(peer["seconds"], 2)
            result["ratio_to_llamaindex"] = round(
                result["chunks_per_s"] / result["llamaindex_chunks_per_s"], 3
            )
        return result
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
