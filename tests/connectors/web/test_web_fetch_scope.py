"""A web page outside the crawl's scope is gone for ``fetch``: dropped, not retried every run.

The pipeline fetches by id a page whose download failed last run (its retry list)
and a page the index lost. If the source's scope has since excluded it, the
connector answers ``DocumentGone`` without a request, as the other connectors
do, and the pipeline forgets the id instead of recording a failure again.
"""

from __future__ import annotations

import pytest

from connectors.errors import DocumentGone
from connectors.registry import open_connector
from core.acl_policy import AclPolicy
from pipelines.config import SourceConfig
from pipelines.store import StagingStore
from pipelines.sync import RETRY_IDS, compute_change_set
from tests.connectors.web.fake import make_source_config


def test_fetch_of_an_excluded_or_off_host_page_is_document_gone_and_requests_nothing(
    fake_web, web_connector
):
    fake_web.seed()
    connector = web_connector(exclude=["/docs/**"])
    fake_web.requests.clear()
    with pytest.raises(DocumentGone, match="outside the crawl's hosts or globs"):
        connector.fetch(f"site:{fake_web.url}/docs/vacation")
    with pytest.raises(DocumentGone, match="outside the crawl's hosts or globs"):
        connector.fetch(f"site:{fake_web.other_host_url}/offsite")
    assert fake_web.requested() == []


def test_an_excluded_page_on_the_retry_list_is_dropped_not_failed_again(fake_web, tmp_path):
    fake_web.seed()
    excluded = f"site:{fake_web.url}/docs/expenses"
    config = SourceConfig.model_validate(
        {**make_source_config(fake_web, "site"), "exclude": ["/docs/**"]}
    )
    store = StagingStore.for_source(tmp_path, "site")
    connector = None
    try:
        # Last run its download failed; since then an `exclude` took it out of scope.
        with store.transaction() as conn:
            store.put_counter(conn, RETRY_IDS, [excluded])
        connector = open_connector(config.scope(), config.connector_settings)
        scan = compute_change_set(config, store, AclPolicy.from_config(config.acl), connector)
    finally:
        if connector is not None:
            connector.close()
        store.close()
    assert scan.rows, "the rest of the site is listed"
    assert excluded not in {f.doc_id for f in scan.failures}
    assert excluded not in scan.retry_ids
    assert excluded not in {r.doc_id for r in scan.rows}
    assert not fake_web.requested("/docs/expenses")
