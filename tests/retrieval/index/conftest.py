"""Fixtures for index backend tests; registers the `opensearch` marker.

* ``opensearch_prefix``: the session's real node (tests/conftest.py
  ``opensearch_url``) and an index prefix of this test's own; what the test
  created there (indices, search pipelines) is deleted after it, and nothing else,
  so ``OPENSEARCH_URL`` may point at a shared cluster.
* ``osmem_server``: osmem-server (an in-memory OpenSearch-compatible emulator),
  started once per session without Japanese analysis; each test gets its own
  copy-on-write clone through ``osmem_clone``/``osmem_url``. Kept for what a real
  node cannot show (injected faults, a node that reports another version).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from opensearchpy import OpenSearch

OPENSEARCH_MARKER = (
    "opensearch: OpenSearch backend tests (a real node: OPENSEARCH_URL or one started by "
    "scripts/opensearch_node.py; osmem-server where faults are injected)"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", OPENSEARCH_MARKER)


@pytest.fixture(scope="session")
def osmem_server():
    osmem = pytest.importorskip("osmem_server")
    server = osmem.OsmemServer.start(freeze=True, japanese=False)
    yield server
    server.close()


@pytest.fixture
def opensearch_prefix(opensearch_url: str) -> Iterator[tuple[str, str]]:
    """``(url, prefix)``: the real node and a fresh index prefix; cleaned up after."""
    prefix = f"trove-test-{uuid.uuid4().hex[:10]}"
    client = OpenSearch(hosts=[opensearch_url], timeout=60)
    pipelines_before = set(client.search_pipeline.get(ignore=404).keys())
    try:
        yield opensearch_url, prefix
    finally:
        client.indices.delete(index=f"{prefix}*", ignore_unavailable=True, expand_wildcards="all")
        for name in set(client.search_pipeline.get(ignore=404).keys()) - pipelines_before:
            if name.startswith(prefix):
                client.search_pipeline.delete(id=name)
        client.close()
