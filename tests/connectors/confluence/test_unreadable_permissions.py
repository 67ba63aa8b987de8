"""A permission lookup that keeps failing with 5xx: that page's failure, or the source's.

Regression: ``HttpClient`` raises ``SourceUnavailable`` once a request has used
its retries, and the connector caught only ``ConfluenceRequestError`` there, so
one page whose restriction read kept answering 500 stopped the whole run, and
every resumed run stopped at the same page. Now the page is a failure (never
indexed with a guessed ACL) and the run goes on, as long as the source still
serves the page itself; a source that is down, or refuses the credentials,
still stops the run.
"""

from __future__ import annotations

import pytest

from connectors.base import ChangeBatch
from connectors.http import SourceAuthError, SourceUnavailable
from core.acl import Acl
from tests.connectors.confluence.conftest import ConnectorFactory, Site
from tests.connectors.confluence.fake import FakeConfluence

ATTEMPTS = 4  # make_source_config's retry.max_attempts


def _documents(batches: list[ChangeBatch]) -> set[str]:
    return {d.doc_id for b in batches for d in b.documents}


def _failures(batches: list[ChangeBatch]) -> dict[str, str]:
    return {f.doc_id: f.reason for b in batches for f in b.failures}


def _restriction(page_id: str) -> str:
    return f"/wiki/rest/api/content/{page_id}/restriction"


def test_a_page_whose_restriction_keeps_failing_is_its_own_failure_and_the_run_goes_on(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    # Six pages under Handbook: its failure is remembered, so they fail at once, and
    # they are not "pages in a row" whose lookups failed (no run-wide stop).
    children = [fake.add_page("ENG", f"Child {n}", parent=site.handbook) for n in range(6)]
    fake.fail_next(None, 500, path=_restriction(site.handbook))
    connector = connector_for()
    first = list(connector.changes(None))  # never raises for one page

    below = [site.handbook, site.onboarding, *children]
    failures = _failures(first)
    assert set(failures) == {f"wiki:page:{p}" for p in below}
    assert all("could not be read" in reason for reason in failures.values())
    assert _documents(first) == {
        f"wiki:page:{site.home}",
        f"wiki:page:{site.runbook}",
        f"wiki:att:{site.notes_txt}",
    }
    assert not {d for b in first for d in b.deleted}, "a failed lookup is never a deletion"
    # One retry budget for Handbook's restriction in the run, not one per page under it.
    assert len(fake.calls_to(_restriction(site.handbook))) == ATTEMPTS

    # The slim listing keeps them (never pruned), readable by nobody (fail closed).
    stamps = {s.doc_id: s for s in connector_for().list_ids()}
    for page_id in below:
        assert stamps[f"wiki:page:{page_id}"].acl == Acl.empty()
    assert stamps[f"wiki:page:{site.home}"].acl != Acl.empty()

    # Once the restriction can be read, the next run reads the failed pages again.
    fake.clear_faults()
    later = list(connector_for().changes(first[-1].cursor))
    assert {f"wiki:page:{p}" for p in below} <= _documents(later)
    assert not _failures(later)


def test_a_source_that_stops_answering_while_permissions_are_read_stops_the_run(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    # The listing got through; then the v1 API and the pages themselves stop answering.
    fake.fail_next(None, 503, path="/wiki/rest/api/")
    fake.fail_next(None, 503, path="/wiki/api/v2/pages/")
    connector = connector_for(include_attachments=False)
    with pytest.raises(SourceUnavailable, match="still failing"):
        list(connector.changes(None))
    with pytest.raises(SourceUnavailable):  # never a partial listing
        list(connector.list_ids())


def test_refused_credentials_on_a_permission_lookup_stop_the_run(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    fake.fail_next(None, 401, path=_restriction(site.handbook))
    with pytest.raises(SourceAuthError):
        list(connector_for().changes(None))


def test_when_every_permission_lookup_keeps_failing_the_run_stops_after_a_few_pages(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    # The permission API is down while the pages still answer: without a limit every
    # page would wait out a retry budget of its own before the run ended.
    for n in range(6):
        fake.add_page("ENG", f"Note {n}")
    fake.fail_next(None, 500, path="/wiki/rest/api/content/")
    connector = connector_for(include_attachments=False)
    with pytest.raises(SourceUnavailable, match="5 pages in a row"):
        list(connector.changes(None))
    assert len(fake.calls_to("/wiki/rest/api/content/")) == 5 * ATTEMPTS
