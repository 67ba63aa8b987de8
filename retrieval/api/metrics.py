"""Prometheus metrics of one app instance (its own registry, so apps never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from retrieval.index.base import IndexStats

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Stages take from microseconds (expand without a directory) to tens of milliseconds.
STAGE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ApiMetrics:
    """Request counts and latencies by route and status; results; filtered-out; index size."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["route", "method", "status"]
        self.requests = Counter(
            "trove_http_requests", "HTTP requests answered.", labels, registry=self.registry
        )
        self.latency = Histogram(
            "trove_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.results = Counter(
            "trove_search_results_returned",
            "Passages returned by searches.",
            registry=self.registry,
        )
        self.filtered = Counter(
            "trove_search_filtered_out",
            "Candidates not returned, by reason (acl_recheck, merged, per_document_cap).",
            ["reason"],
            registry=self.registry,
        )
        self.low_confidence = Counter(
            "trove_search_low_confidence",
            "Searches flagged low_confidence.",
            registry=self.registry,
        )
        self.stage = Histogram(
            "trove_search_stage_duration_seconds",
            "Time per stage of a search request: auth, expand, search, rerank, merge, "
            "audit, serialize.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.index_chunks = Gauge("trove_index_chunks", "Live chunks.", registry=self.registry)
        self.index_documents = Gauge(
            "trove_index_documents", "Documents in the index.", registry=self.registry
        )
        self.index_bytes = Gauge(
            "trove_index_size_bytes", "Index size on disk.", registry=self.registry
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method, str(status)).observe(seconds)

    def observe_search(self, returned: int, filtered_out: dict[str, int], low: bool) -> None:
        self.results.inc(returned)
        for reason, count in filtered_out.items():
            self.filtered.labels(reason).inc(count)
        if low:
            self.low_confidence.inc()

    def observe_stages(self, seconds: dict[str, float]) -> None:
        for stage, value in seconds.items():
            self.stage.labels(stage).observe(value)

    def render(self, stats: IndexStats | None) -> bytes:
        if stats is not None:
            self.index_chunks.set(stats.chunks)
            self.index_documents.set(stats.documents)
            self.index_bytes.set(stats.size_bytes)
        return generate_latest(self.registry)
