"""Fixtures: a seeded fake tenant and a connector wired to it the way `trove ingest` would."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from connectors.sharepoint.connector import SharePointConnector
from connectors.sharepoint.shared_reads import SHARED_READS
from pipelines.config import SourceConfig
from tests.connectors.sharepoint.fake import FakeSharePoint, make_source_config


@pytest.fixture(scope="session")
def sharepoint_http() -> Iterator[HTTPServer]:
    """One loopback server for the session (stopping one takes ~0.5 s)."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_shared_reads_across_tests() -> Iterator[None]:
    """Item ids repeat across tests (one server, same seed): no shared read may leak."""
    SHARED_READS.clear()
    yield
    SHARED_READS.clear()


@pytest.fixture
def fake(sharepoint_http: HTTPServer) -> Iterator[FakeSharePoint]:
    """A freshly seeded tenant; ``fake.ids`` names the seeded drive, site and items."""
    server = FakeSharePoint(server=sharepoint_http).start()
    server.ids = server.seed()  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sleeps() -> list[float]:
    """Every delay the connector asked to sleep (nothing really sleeps)."""
    return []


@pytest.fixture
def make_connector(
    fake: FakeSharePoint, tmp_path: Path, sleeps: list[float]
) -> Iterator[Callable[..., SharePointConnector]]:
    """Build connectors from the YAML-able source block (token via the fake's token endpoint)."""
    made: list[SharePointConnector] = []

    def build(name: str = "sp", **overrides: Any) -> SharePointConnector:
        block = make_source_config(fake, name, tmp_path, **overrides)
        config = SourceConfig.model_validate(block)
        connector = SharePointConnector(config.scope(), config.sharepoint, sleep=sleeps.append)
        made.append(connector)
        return connector

    yield build
    for connector in made:
        connector.close()


@pytest.fixture
def connector(make_connector: Callable[..., SharePointConnector]) -> SharePointConnector:
    return make_connector()
