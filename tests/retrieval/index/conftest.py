"""Fixtures for index backend tests; registers the `opensearch` marker.

osmem-server (an in-memory OpenSearch-compatible server, the `osmem_server`
pytest plugin) is started once per session without Japanese analysis (faster);
each test gets its own copy-on-write clone through `osmem_clone`/`osmem_url`.
"""

from __future__ import annotations

import pytest

OPENSEARCH_MARKER = (
    "opensearch: OpenSearch backend tests (osmem-server in-process, request shapes; "
    "a real cluster when OPENSEARCH_URL is set)"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", OPENSEARCH_MARKER)


@pytest.fixture(scope="session")
def osmem_server():
    osmem = pytest.importorskip("osmem_server")
    server = osmem.OsmemServer.start(freeze=True, japanese=False)
    yield server
    server.close()
