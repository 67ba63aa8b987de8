"""Throttling, failures, credentials: the connector keeps going or fails clearly, never leaks."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from connectors.confluence.connector import ConfluenceConnector
from connectors.errors import ConnectorError
from connectors.http import SourceAuthError, SourceUnavailable
from pipelines.config import SourceConfig
from tests.connectors.confluence.conftest import ConnectorFactory, Site
from tests.connectors.confluence.fake import TOKEN_ENV, FakeConfluence, make_source_config


def test_429_waits_the_requested_retry_after(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory, sleeps: list[float]
) -> None:
    fake.throttle_next(1, retry_after=2)
    connector = connector_for()
    stamps = list(connector.list_ids())
    assert sleeps == [2.0]
    assert len(stamps) == 6
    spaces_calls = [c for c in fake.calls if c.path == "/wiki/api/v2/spaces"]
    assert len(spaces_calls) == 2  # the throttled request, then its retry


def test_retry_after_as_http_date(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory, sleeps: list[float]
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    fake.throttle_next(1, retry_after=format_datetime(when, usegmt=True))
    list(connector_for().list_ids())
    assert len(sleeps) == 1 and 25.0 <= sleeps[0] <= 30.0


def test_overload_403_with_retry_after_is_retried(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory, sleeps: list[float]
) -> None:
    fake.throttle_next(1, retry_after=1, status=403, path="/wiki/rest/api/content/")
    assert len(list(connector_for().list_ids())) == 6
    assert sleeps == [1.0]


def test_persistent_5xx_raises_source_unavailable(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory, sleeps: list[float]
) -> None:
    fake.fail_next(None, 502)
    connector = connector_for()
    with pytest.raises(SourceUnavailable, match="still failing"):
        list(connector.changes(None))
    with pytest.raises(SourceUnavailable):
        list(connector.list_ids())
    assert len(sleeps) == 6  # max_attempts 4, minus the last, twice


def test_failed_download_is_a_document_failure_and_the_run_goes_on(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    fake.fail_next(None, 500, path=f"/wiki/download/attachments/{site.onboarding}/")
    batches = list(connector_for().changes(None))
    failures = [f for b in batches for f in b.failures]
    assert [f.doc_id for f in failures] == [f"wiki:att:{site.guide_pdf}"]
    assert failures[0].path == "ENG/Home/Handbook/Onboarding/guide.pdf"
    assert "download failed" in failures[0].reason
    docs = {d.doc_id for b in batches for d in b.documents}
    assert f"wiki:page:{site.onboarding}" in docs and f"wiki:att:{site.notes_txt}" in docs


def test_oversized_attachment_fails_without_download(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for(source_overrides={"limits": {"max_bytes": 15}})
    batches = list(connector.changes(None))
    (failure,) = [f for b in batches for f in b.failures]
    assert failure.doc_id == f"wiki:att:{site.guide_pdf}" and "too large" in failure.reason
    assert not fake.calls_to(f"/wiki/download/attachments/{site.onboarding}/guide.pdf")
    assert f"wiki:att:{site.notes_txt}" in {d.doc_id for b in batches for d in b.documents}


def test_credentials_never_reach_logs_or_errors(
    fake: FakeConfluence,
    site: Site,
    connector_for: ConnectorFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    basic = base64.b64encode(f"{fake.email}:{fake.token}".encode()).decode()
    caplog.set_level(logging.DEBUG)
    fake.throttle_next(1, retry_after=1)
    connector = connector_for()
    list(connector.changes(None))
    connector.sync_groups()
    assert fake.token not in repr(connector.settings)

    monkeypatch.setenv(TOKEN_ENV, "wrong-token-Zx81")
    wrong = connector_for()
    with pytest.raises(SourceAuthError) as refused:
        list(wrong.list_ids())
    message = str(refused.value)
    assert "401" in message and "/wiki/api/v2/spaces" in message
    wrong_basic = base64.b64encode(f"{fake.email}:wrong-token-Zx81".encode()).decode()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged  # there were logs to look at
    for secret in (fake.token, basic, "wrong-token-Zx81", wrong_basic):
        assert secret not in logged
        assert secret not in message


def test_missing_token_is_a_clear_error(
    fake: FakeConfluence, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    config = SourceConfig.model_validate(make_source_config(fake, "wiki"))
    with pytest.raises(ConnectorError, match=TOKEN_ENV):
        ConfluenceConnector(config.scope(), config.connector_settings)


def test_token_from_a_file(
    fake: FakeConfluence, site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    entry = make_source_config(fake, "wiki", token_file=tmp_path / "secrets" / "confluence")
    assert entry["confluence"]["api_token"] == {"file": str(tmp_path / "secrets" / "confluence")}
    config = SourceConfig.model_validate(entry)
    connector = ConfluenceConnector(config.scope(), config.confluence, sleep=lambda _: None)
    try:
        assert len(list(connector.list_ids())) == 7  # every global space: SANDBOX too
    finally:
        connector.close()


def test_wrong_source_type_is_refused(tmp_path: Path) -> None:
    config = SourceConfig(name="files", path=tmp_path)
    with pytest.raises(ValueError, match="confluence"):
        ConfluenceConnector(config.scope(), config.connector_settings)


def test_a_long_retry_after_is_waited_in_full_and_an_exhausted_budget_is_said(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory, sleeps: list[float]
) -> None:
    """Regression (issue 18, item 6): a Retry-After above retry.max_delay_s (60 here) was
    cut to it, so Trove came back early and spent its budget on more 429s."""
    fake.throttle_next(1, retry_after=90)
    assert len(list(connector_for().list_ids())) == 6
    assert sleeps == [90.0]

    sleeps.clear()
    fake.throttle_next(1, retry_after=400)  # longer than the whole budget (300 s)
    with pytest.raises(SourceUnavailable, match="retry budget ran out: the server asked"):
        list(connector_for().list_ids())
    assert sleeps == []
