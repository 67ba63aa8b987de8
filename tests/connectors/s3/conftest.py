"""Fixtures: one moto server for the module's tests, wiped before each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.s3.connector import S3Connector
from pipelines.config import SourceConfig
from tests.connectors.s3.fake import FakeS3, make_source_config


@pytest.fixture(scope="session")
def _moto_s3() -> Iterator[FakeS3]:
    fake = FakeS3().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_s3(_moto_s3: FakeS3) -> Iterator[FakeS3]:
    _moto_s3.reset()
    yield _moto_s3
    _moto_s3.disable_auth()


@pytest.fixture
def s3_source(fake_s3: FakeS3, tmp_path: Path):
    """Build a validated SourceConfig for the fake, with overrides for the ``s3`` block."""

    def build(name: str = "archive", **s3_overrides: Any) -> SourceConfig:
        data = make_source_config(fake_s3, name, tmp_path)
        extra = {
            k: s3_overrides.pop(k) for k in ("include", "exclude", "limits") if k in s3_overrides
        }
        data["s3"].update(s3_overrides)
        data.update(extra)
        return SourceConfig.model_validate(data)

    return build


@pytest.fixture
def s3_connector(s3_source):
    made: list[S3Connector] = []

    def build(**overrides: Any) -> S3Connector:
        source = s3_source(**overrides)
        connector = S3Connector(source.scope(), source.s3)
        made.append(connector)
        return connector

    yield build
    for connector in made:
        connector.close()
