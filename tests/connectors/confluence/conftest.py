"""Fixtures: a fake Confluence site per test (one loopback server per session), and connectors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from connectors.confluence.connector import ConfluenceConnector
from pipelines.config import SourceConfig
from tests.connectors.confluence.fake import TOKEN_ENV, FakeConfluence, make_source_config


@pytest.fixture(scope="session")
def _http_server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1")
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def fake(_http_server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeConfluence]:
    site = FakeConfluence(server=_http_server).start()
    monkeypatch.setenv(TOKEN_ENV, site.token)
    yield site
    site.stop()


@pytest.fixture
def sleeps() -> list[float]:
    """Every delay the connector asked to sleep (nothing really sleeps)."""
    return []


ConnectorFactory = Callable[..., ConfluenceConnector]


@pytest.fixture
def connector_for(fake: FakeConfluence, sleeps: list[float]) -> Iterator[ConnectorFactory]:
    """Build a connector for the fake; keyword arguments go into the ``confluence:`` block.

    ``source_overrides`` (a dict) is merged into the source entry (``retry``, ``limits``).
    """
    built: list[ConfluenceConnector] = []

    def build(source_overrides: dict[str, Any] | None = None, **block: Any) -> ConfluenceConnector:
        entry = make_source_config(fake, "wiki", **{"spaces": ["ENG", "OPS"], **block})
        entry.update(source_overrides or {})
        config = SourceConfig.model_validate(entry)
        connector = ConfluenceConnector(config.scope(), config.confluence, sleep=sleeps.append)
        built.append(connector)
        return connector

    yield build
    for connector in built:
        connector.close()


@dataclass
class Site:
    """The seeded content: ids of what the tests touch."""

    home: str
    handbook: str
    onboarding: str
    runbook: str
    guide_pdf: str
    drawing_vsdx: str  # an attachment type Trove has no parser for
    notes_txt: str


@pytest.fixture
def site(fake: FakeConfluence) -> Site:
    """Users alice/bob (visible e-mail) and carol (hidden); groups eng, finance; spaces ENG, OPS.

    ENG: Home > Handbook > Onboarding (guide.pdf, drawing.vsdx), viewable by group eng.
    OPS: Runbook (notes.txt), viewable by carol and group finance. SANDBOX is not configured.
    """
    fake.add_user("u-alice", "Alice", "alice@example.com")
    fake.add_user("u-bob", "Bob", "Bob@Example.com")
    fake.add_user("u-carol", "Carol", None)
    fake.add_group("eng", ["u-alice", "u-bob", "u-carol"])
    fake.add_group("finance", ["u-carol"])
    fake.add_space("ENG", "Engineering", groups=["eng"])
    fake.add_space("OPS", "Operations", users=["u-carol"], groups=["finance"])
    fake.add_space("SANDBOX", "Sandbox", groups=["eng"])
    home = fake.add_page("ENG", "Home", "<p>Welcome to engineering</p>")
    handbook = fake.add_page("ENG", "Handbook", "<h1>Handbook</h1><p>How we work</p>", parent=home)
    onboarding = fake.add_page(
        "ENG",
        "Onboarding",
        '<p>Day one</p><ac:structured-macro ac:name="code"><ac:plain-text-body>'
        "<![CDATA[make setup && echo <ok>]]></ac:plain-text-body></ac:structured-macro>",
        parent=handbook,
    )
    guide = fake.add_attachment(onboarding, "guide.pdf", b"%PDF-1.4 fake guide", "application/pdf")
    drawing = fake.add_attachment(
        onboarding, "drawing.vsdx", b"PK fake drawing", "application/vnd.ms-visio.drawing"
    )
    runbook = fake.add_page("OPS", "Runbook", "<p>Restart the service</p>")
    notes = fake.add_attachment(runbook, "notes.txt", b"on-call notes", "text/plain")
    fake.add_page("SANDBOX", "Scratch", "<p>ignored</p>")
    return Site(home, handbook, onboarding, runbook, guide, drawing, notes)
