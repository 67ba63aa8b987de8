"""Fixtures: one fake site server, emptied before each test; connectors with a recording sleep."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from connectors.web.connector import WebConnector
from pipelines.config import SourceConfig
from tests.connectors.web.fake import FakeWeb, make_source_config


@pytest.fixture(scope="session")
def _web_server() -> Iterator[FakeWeb]:
    fake = FakeWeb().start()  # stopping a server costs ~0.5 s: one for the session
    yield fake
    fake.stop()


@pytest.fixture
def fake_web(_web_server: FakeWeb) -> FakeWeb:
    _web_server.reset()
    return _web_server


class Sleeps(list):
    """A no-op ``sleep`` that remembers every delay it was asked for."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def web_connector(fake_web: FakeWeb, sleeps: Sleeps):
    made: list[WebConnector] = []

    def build(*, source: dict[str, Any] | None = None, **web: Any) -> WebConnector:
        top = {k: web.pop(k) for k in ("include", "exclude", "limits", "acl") if k in web}
        data = source or make_source_config(fake_web, "site", **web)
        data.update(top)
        config = SourceConfig.model_validate(data)
        connector = WebConnector(config.scope(), config.web, sleep=sleeps)
        made.append(connector)
        return connector

    yield build
    for connector in made:
        connector.close()
