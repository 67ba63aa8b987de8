"""Configuration of the index backend: the embedded index or an OpenSearch cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from core.config import StrictModel


class OpenSearchAuthConfig(StrictModel):
    """Basic auth (``username``/``password``) or AWS SigV4 (``aws_region``); never logged."""

    username: str | None = None
    password: SecretStr | None = None  # prefer TROVE_INDEX__AUTH__PASSWORD
    aws_region: str | None = None
    aws_service: Literal["es", "aoss"] = "es"


class IndexConfig(StrictModel):
    backend: Literal["embedded", "opensearch"] = "embedded"
    # embedded backend
    path: Path = Path(".trove/index")
    # The dense first pass: "auto" = torch's private int8 kernel where a child
    # process verified it, else numpy; "numpy" never uses torch (docs/dense-kernel.md).
    dense_kernel: Literal["auto", "numpy"] = "auto"
    # opensearch backend
    hosts: list[str] = Field(default_factory=lambda: ["http://localhost:9200"])
    index_prefix: str = Field(default="trove", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    auth: OpenSearchAuthConfig = Field(default_factory=OpenSearchAuthConfig)
    verify_certs: bool = True
    ca_certs: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    knn_engine: Literal["lucene", "faiss"] = "lucene"
    hybrid_combination: Literal["normalization", "rrf"] = "normalization"
    pagination_depth: int = Field(default=100, ge=1, le=10000)
    # HNSW candidate queue of every k-NN query (None: the engine's default, k). 100
    # from measurement: at Lucene's default a bare top 10 for a wide reader missed
    # some of the exact top 10, with 100 it found them all
    # (docs/benchmarks.md#opensearch-side-by-side).
    knn_ef_search: int | None = Field(default=100, ge=1, le=10000)
    number_of_shards: int = Field(default=1, ge=1, le=1024)
    number_of_replicas: int = Field(default=1, ge=0, le=32)  # 0 on a single-node cluster
