"""Embedding backends side by side: throughput and closeness to torch fp32 on real chunks.

Chunks come from the 18F handbook through Trove's own parser and chunker (the
longer ones, ~200 word pieces, as ingestion produces them). Each backend encodes
the same texts ``repeats`` times, interleaved (torch, onnx, onnx-int8, torch, …)
so that load from other processes falls on all of them alike; the median is
reported. Closeness is the cosine of each vector to torch fp32's.

Usage::

    python -m trove.bench.embed --chunks 256 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from trove.bench.ingest import DEFAULT_CORPUS, corpus_files

BACKENDS = ("torch", "onnx", "onnx-int8")


def sample_chunks(n: int, corpus: Path = DEFAULT_CORPUS, min_tokens: int = 150) -> list[str]:
    """``n`` chunk texts (as embedded) of at least ``min_tokens``, from every 3rd document."""
    from pipelines.chunk import HFTokenCounter, chunk_document
    from pipelines.errors import ParseError
    from pipelines.parse import parse_file
    from retrieval.embedding.factory import get_embedder

    counter = HFTokenCounter(get_embedder().tokenizer)
    texts: list[str] = []
    for path in corpus_files(corpus, None)[::3]:
        try:
            parsed = parse_file(path, doc_id=str(path), version="bench")
        except ParseError:
            continue
        for chunk in chunk_document(parsed, counter, max_tokens=200, max_seq_length=256):
            if chunk.token_count >= min_tokens:
                texts.append(chunk.embedding_text)
        if len(texts) >= n:
            return texts[:n]
    return texts


def compare(
    texts: list[str], backends: tuple[str, ...] = BACKENDS, repeats: int = 3
) -> dict[str, Any]:
    """Per backend: texts/s (median), speed-up over torch, cosine to torch (mean, min)."""
    from retrieval.embedding.factory import get_embedder

    if "torch" not in backends:
        raise ValueError(f"the comparison needs torch as the reference, got {backends}")
    embedders = {b: get_embedder(backend=b) for b in backends}
    loads: dict[str, float] = {}
    for name, embedder in embedders.items():
        started = time.perf_counter()
        embedder.warm_up()
        embedder.encode_documents(texts[:8])  # first-call allocations out of the timing
        loads[name] = time.perf_counter() - started
    seconds: dict[str, list[float]] = {b: [] for b in backends}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, embedder in embedders.items():
            started = time.perf_counter()
            vectors[name] = embedder.encode_documents(texts)
            seconds[name].append(time.perf_counter() - started)
    torch_rate = len(texts) / statistics.median(seconds["torch"])
    out: dict[str, Any] = {"texts": len(texts), "repeats": repeats, "backends": {}}
    for name in backends:
        rate = len(texts) / statistics.median(seconds[name])
        cosine = (vectors[name] * vectors["torch"]).sum(axis=1)
        out["backends"][name] = {
            "texts_per_s": round(rate, 2),
            "speedup_vs_torch": round(rate / torch_rate, 2),
            "cosine_mean": round(float(cosine.mean()), 4),
            "cosine_min": round(float(cosine.min()), 4),
            "seconds": [round(s, 2) for s in seconds[name]],
            "load_s": round(loads[name], 2),
            "build_s": getattr(embedders[name], "build_seconds", None),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    from core.runtime import configure_offline_environment

    configure_offline_environment()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(compare(sample_chunks(args.chunks), repeats=args.repeats)))


if __name__ == "__main__":
    main()
