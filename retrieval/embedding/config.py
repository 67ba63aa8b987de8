"""Configuration of the embedding model and the backend that runs it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from core.config import StrictModel


class EmbeddingConfig(StrictModel):
    model: str = "all-MiniLM-L6-v2"
    # "onnx-int8" (default): the model on ONNX Runtime, documents with dynamic
    # int8 weights, queries in fp32. Chosen by measurement: more document
    # throughput than torch, faster query embedding and the same retrieval
    # quality on CPU (docs/benchmarks.md#embedding-backends-latest).
    # "torch": sentence-transformers, for GPUs.
    backend: Literal["torch", "onnx-int8"] = (
        "onnx-int8"  # = retrieval.embedding.factory.DEFAULT_BACKEND
    )
    batch_size: int = Field(default=32, ge=1, le=1024)
    device: str = "cpu"

    @model_validator(mode="before")
    @classmethod
    def _gpu_means_torch(cls, data: Any) -> Any:
        # ONNX Runtime runs on the CPU here: a GPU device without a backend
        # named means torch, rather than an error about a default nobody chose.
        gpu = isinstance(data, dict) and str(data.get("device", "cpu")) != "cpu"
        if gpu and "backend" not in data:
            return {**data, "backend": "torch"}
        return data
