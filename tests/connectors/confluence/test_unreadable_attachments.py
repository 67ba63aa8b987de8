"""A page's attachment listing that keeps failing with 5xx: that page's failure, or the source's.

Regression: ``HttpClient`` raises ``SourceUnavailable`` once a request has used its
retries, and the full enumeration did not catch it around a page's attachment
listing, so one page whose ``/pages/{id}/attachments`` kept answering 500 stopped
the whole run, and every resumed run stopped at the same page. Now, as for a
permission lookup (test_unreadable_permissions.py), the page is a failure, neither
it nor its attachments indexed from a partial read, and the next run reads it
again with its attachments; a source that is down, refused credentials, or an
attachment API that fails for page after page still stops the run.
"""

from __future__ import annotations

import pytest

from connectors.base import ChangeBatch
from connectors.confluence.connector import AttachmentListingFailed
from connectors.http import SourceAuthError, SourceUnavailable
from tests.connectors.confluence.conftest import ConnectorFactory, Site
from tests.connectors.confluence.fake import FakeConfluence

ATTEMPTS = 4  # make_source_config's retry.max_attempts


def _documents(batches: list[ChangeBatch]) -> dict[str, bytes | None]:
    return {d.doc_id: d.content for b in batches for d in b.documents}


def _failures(batches: list[ChangeBatch]) -> dict[str, str]:
    return {f.doc_id: f.reason for b in batches for f in b.failures}


def _attachments(page_id: str) -> str:
    return f"/wiki/api/v2/pages/{page_id}/attachments"


def test_a_page_whose_attachments_cannot_be_listed_is_its_failure_and_the_next_run_reads_it(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    fake.fail_next(None, 500, path=_attachments(site.onboarding))
    first = list(connector_for().changes(None))  # never raises for one page

    onboarding, guide = f"wiki:page:{site.onboarding}", f"wiki:att:{site.guide_pdf}"
    failures = _failures(first)
    assert set(failures) == {onboarding}
    assert "could not be listed" in failures[onboarding]
    # The rest of the source goes on; the page and its attachments wait, not half-read.
    assert set(_documents(first)) == {
        f"wiki:page:{site.home}",
        f"wiki:page:{site.handbook}",
        f"wiki:page:{site.runbook}",
        f"wiki:att:{site.notes_txt}",
    }
    assert not {d for b in first for d in b.deleted}, "a failed listing is never a deletion"
    assert len(fake.calls_to(_attachments(site.onboarding))) == ATTEMPTS  # one retry budget
    assert fake.calls_to("/wiki/download/"), "the other attachments were downloaded"

    # The slim listing never leaves them out (the pipeline would delete them): it stops.
    with pytest.raises(AttachmentListingFailed, match=site.onboarding):
        list(connector_for().list_ids())

    # Once the listing answers, the next run reads the page again with its attachments,
    # those listed without bytes (the pipeline fetches the versions it lacks).
    fake.clear_faults()
    fake.clear_calls()
    later = list(connector_for().changes(first[-1].cursor))
    documents = _documents(later)
    assert {onboarding, guide} <= set(documents)
    assert f"wiki:att:{site.drawing_vsdx}" not in documents  # a type Trove cannot parse
    assert documents[guide] is None and not fake.calls_to("/wiki/download/")
    assert not _failures(later)
    assert connector_for().fetch(guide).content == b"%PDF-1.4 fake guide"
    # Read again once: the run after that has nothing left to retry.
    again = list(connector_for().changes(later[-1].cursor))
    assert not ({onboarding, guide} & set(_documents(again)))


def test_a_source_that_stops_answering_while_attachments_are_listed_stops_the_run(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    # The space's listing got through; then every page read fails, attachments included.
    fake.fail_next(None, 503, path="/wiki/api/v2/pages/")
    with pytest.raises(SourceUnavailable, match="still failing") as stopped:
        list(connector_for().changes(None))
    assert "in a row" not in str(stopped.value)


def test_refused_credentials_on_an_attachment_listing_stop_the_run(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    fake.fail_next(None, 401, path=_attachments(site.onboarding))
    with pytest.raises(SourceAuthError):
        list(connector_for().changes(None))


def test_when_every_attachment_listing_keeps_failing_the_run_stops_after_a_few_pages(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    # The attachment API is down while the pages still answer.
    notes = [fake.add_page("ENG", f"Note {n}") for n in range(6)]
    for page_id in [site.home, site.handbook, site.onboarding, *notes]:
        fake.fail_next(None, 500, path=_attachments(page_id))
    with pytest.raises(SourceUnavailable, match="attachment listings of 5 pages in a row"):
        list(connector_for().changes(None))
    listed = [c for c in fake.calls_to("/wiki/api/v2/pages/") if c.path.endswith("/attachments")]
    assert len(listed) == 5 * ATTEMPTS


def test_a_page_whose_permissions_failed_comes_back_with_its_attachments(
    fake: FakeConfluence, connector_for: ConnectorFactory
) -> None:
    # Content from long before the first run: past CQL's overlap, no search names it again.
    fake.add_group("eng", [])
    fake.add_space("ENG", "Engineering", groups=["eng"])
    fake.clock.advance(hours=-2)
    page = fake.add_page("ENG", "Guides")
    guide = f"wiki:att:{fake.add_attachment(page, 'guide.pdf', b'%PDF-1.4', 'application/pdf')}"
    fake.clock.advance(hours=2)
    # The first run listed the attachments but could not say who may read the page.
    fake.fail_next(None, 500, path=f"/wiki/rest/api/content/{page}/restriction")
    first = list(connector_for().changes(None))
    assert set(_failures(first)) == {f"wiki:page:{page}"}
    assert not _documents(first)
    fake.clear_faults()
    later = list(connector_for().changes(first[-1].cursor))
    assert set(_documents(later)) == {f"wiki:page:{page}", guide}
