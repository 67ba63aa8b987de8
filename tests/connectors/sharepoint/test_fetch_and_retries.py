"""Content download (302 without auth), throttling (Retry-After), and secrets kept out of logs."""

from __future__ import annotations

import email.utils
import logging
from datetime import UTC, datetime, timedelta

import pytest

from connectors.errors import ConnectorError
from connectors.http import SourceAuthError
from connectors.sharepoint.client import NotFound
from connectors.sharepoint.connector import SharePointConnector, document_id
from pipelines.config import SourceConfig
from tests.connectors.sharepoint.fake import make_source_config, payload


def test_fetch_follows_the_redirect_without_the_authorization_header(fake, connector):
    doc_id = document_id("sp", fake.ids["drive"], fake.ids["design"])

    doc = connector.fetch(doc_id)

    assert doc.content == fake.items[fake.ids["design"]].content
    assert doc.size == len(doc.content)
    assert doc.path == "Documents/Specs/design.md"  # from the item's parentReference.path
    assert doc.acl.allow_groups  # site groups, read with the item
    (content,) = fake.requests_to(r"/content$")
    assert content.authorization and content.authorization.startswith("Bearer ")
    (download,) = fake.requests_to(r"download\.aspx$")
    assert download.host == "localhost" and "tempauth" in download.query
    assert download.authorization is None


def test_fetch_of_a_missing_item_or_failed_download_raises_with_the_doc_id(fake, connector):
    gone = document_id("sp", fake.ids["drive"], fake.ids["api"])
    fake.delete_file(fake.ids["api"])
    with pytest.raises(NotFound, match=gone):
        connector.fetch(gone)

    fake.queue_response("GET", "/_layouts/15/download.aspx", 404, b"gone")
    doc_id = document_id("sp", fake.ids["drive"], fake.ids["design"])
    with pytest.raises(NotFound, match="content not found"):
        connector.fetch(doc_id)
    with pytest.raises(ConnectorError, match="not a document id"):
        connector.fetch("other:drive:item")


def test_retry_after_seconds_is_honoured(fake, make_connector, sleeps):
    connector = make_connector(retry={"max_delay_s": 120, "max_total_s": 300})
    fake.throttle_next(2, "3")

    docs = [d for b in connector.changes(None) for d in b.documents]

    assert len(docs) == 4
    assert sleeps == [3.0, 3.0]
    # The first Graph call (the site) was answered 429 twice, then went through.
    assert len(fake.requests_to(r"^/v1\.0/sites/contoso\.sharepoint\.com:/sites/eng$")) == 3


def test_retry_after_http_date_is_honoured(fake, make_connector, sleeps):
    connector = make_connector(retry={"max_delay_s": 120, "max_total_s": 300})
    when = datetime.now(UTC) + timedelta(seconds=30)
    fake.throttle_next(1, email.utils.format_datetime(when, usegmt=True))

    assert len([d for b in connector.changes(None) for d in b.documents]) == 4

    assert len(sleeps) == 1 and 27 <= sleeps[0] <= 30


def test_throttled_batch_sub_requests_are_retried_after_their_retry_after(
    fake, make_connector, sleeps
):
    connector = make_connector(
        permission_batch_size=1, retry={"max_delay_s": 120, "max_total_s": 300}
    )
    fake.queue_response("POST", "/v1.0/$batch", 200, payload("batch_inner_429.json"))

    batches = list(connector.changes(None))

    assert len([d for b in batches for d in b.documents]) == 4
    assert not any(b.failures for b in batches)
    assert sleeps == [7.0]
    assert len(fake.requests_to(r"/\$batch$")) == 5  # one per file, plus the retried one


def test_throttling_past_the_budget_fails_the_run_with_a_clear_error(fake, make_connector):
    fake.throttle_next(10, "1")
    with pytest.raises(ConnectorError, match="still failing after 4 attempts"):
        list(make_connector().changes(None))


def test_secrets_and_tokens_never_reach_logs_or_errors(fake, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    block = make_source_config(fake, "sp", tmp_path, retry={"max_attempts": 2})
    config = SourceConfig.model_validate(block)
    connector = SharePointConnector(config.scope(), config.sharepoint, sleep=lambda s: None)
    fake.throttle_next(1, "1")
    list(connector.changes(None))
    connector.fetch(document_id("sp", fake.ids["drive"], fake.ids["design"]))
    connector.sync_groups()
    issued = list(fake._tokens)
    assert issued

    # A wrong secret: Entra's refusal is reported, the secret is not.
    (tmp_path / "wrong").write_text("Wr0ng-Secret-Value~xyz")
    block["sharepoint"]["client_secret"] = {"file": str(tmp_path / "wrong")}
    config = SourceConfig.model_validate(block)
    bad = SharePointConnector(config.scope(), config.sharepoint, sleep=lambda s: None)
    with pytest.raises(SourceAuthError) as refused:
        list(bad.changes(None))
    assert "invalid_client" in str(refused.value) and "AADSTS7000215" in str(refused.value)

    # A token Graph does not accept: a 401 names the URL, not the token.
    config = SourceConfig.model_validate(make_source_config(fake, "sp", tmp_path))
    stale = SharePointConnector(
        config.scope(), config.sharepoint, token_provider=lambda scope: "stale-token-value"
    )
    with pytest.raises(SourceAuthError) as unauthorised:
        list(stale.changes(None))

    texts = [str(refused.value), str(unauthorised.value)]
    texts += [r.getMessage() for r in caplog.records if r.name.startswith("connectors")]
    texts += [repr(block["sharepoint"]["client_secret"])]
    for text in texts:
        for secret in [fake.client_secret, "Wr0ng-Secret-Value~xyz", "stale-token-value", *issued]:
            assert secret not in text
    assert any("retrying" in r.getMessage() for r in caplog.records)  # the logs were captured
    # The download URL's tempauth credential is not logged either.
    (download,) = fake.requests_to(r"download\.aspx$")
    assert all(download.query["tempauth"] not in t for t in texts)
