"""`include`/`exclude` on a Confluence source: the globs match `SPACE/Ancestor/…/Title`
(an attachment adds `/file name`), in every read, before anything of the page is read.

Regression: the connector ignored both globs, so an `exclude: ["HR/**"]` still
indexed HR's pages.
"""

from __future__ import annotations

import pytest

from connectors.base import ChangeBatch
from connectors.errors import DocumentGone
from connectors.models import SourceDocument
from tests.connectors.confluence.conftest import ConnectorFactory, Site
from tests.connectors.confluence.fake import FakeConfluence


def _docs(batches: list[ChangeBatch]) -> dict[str, SourceDocument]:
    return {d.doc_id: d for b in batches for d in b.documents}


def _deleted(batches: list[ChangeBatch]) -> set[str]:
    return {doc_id for b in batches for doc_id in b.deleted}


def _body_reads(fake: FakeConfluence, page_id: str) -> int:
    page = f"/wiki/api/v2/pages/{page_id}"
    return len([c for c in fake.calls_to(page) if c.path == page and c.arg("body-format")])


def test_an_excluded_subtree_is_never_yielded_listed_or_fetched(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    # `Handbook/**` is what lies below Handbook, not Handbook itself.
    connector = connector_for(source_overrides={"exclude": ["ENG/Home/Handbook/**"]})
    first = list(connector.changes(None))
    inside = {
        f"wiki:page:{site.home}",
        f"wiki:page:{site.handbook}",
        f"wiki:page:{site.runbook}",
        f"wiki:att:{site.notes_txt}",
    }
    outside = {f"wiki:page:{site.onboarding}", f"wiki:att:{site.guide_pdf}"}
    assert set(_docs(first)) == inside
    assert outside <= _deleted(first)  # dropped from the index if it was there
    assert not [f for b in first for f in b.failures]
    # Where a page sits is read before who may read it: no permission lookup, no download.
    assert fake.calls_to(f"/wiki/rest/api/content/{site.handbook}/restriction")
    assert not fake.calls_to(f"/wiki/rest/api/content/{site.onboarding}/restriction")
    assert not fake.calls_to(f"/wiki/download/attachments/{site.onboarding}/")
    assert {s.doc_id for s in connector.list_ids()} == inside

    fake.clear_calls()
    for doc_id in sorted(outside):
        with pytest.raises(DocumentGone, match="outside the include/exclude"):
            connector.fetch(doc_id)
    assert _body_reads(fake, site.onboarding) == 0
    assert not fake.calls_to(f"/wiki/download/attachments/{site.onboarding}/")
    assert connector.fetch(f"wiki:page:{site.home}").content

    # Incremental: an edit inside the excluded tree is reported deleted, never a document.
    fake.clock.advance(minutes=1)
    fake.edit_page(site.onboarding, "<p>Day one, revised</p>")
    fake.edit_page(site.home, "<p>Welcome back</p>")
    later = list(connector.changes(first[-1].cursor))
    assert set(_docs(later)) == {f"wiki:page:{site.home}"}
    assert f"wiki:page:{site.onboarding}" in _deleted(later)


def test_include_keeps_other_spaces_out(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    connector = connector_for(source_overrides={"include": ["OPS/**"]})
    inside = {f"wiki:page:{site.runbook}", f"wiki:att:{site.notes_txt}"}
    assert set(_docs(list(connector.changes(None)))) == inside
    assert {s.doc_id for s in connector.list_ids()} == inside
    with pytest.raises(DocumentGone):
        connector.fetch(f"wiki:page:{site.home}")


def test_an_attachment_is_selected_by_its_own_path_and_keeps_its_pages_permissions(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    guide = f"wiki:att:{site.guide_pdf}"
    unscoped = _docs(list(connector_for().changes(None)))[guide]
    connector = connector_for(source_overrides={"include": ["**/*.pdf"]})
    batches = list(connector.changes(None))
    assert set(_docs(batches)) == {guide}
    document = _docs(batches)[guide]
    assert document.path == "ENG/Home/Handbook/Onboarding/guide.pdf"
    assert document.acl == unscoped.acl  # its page is left out, its permissions are not
    assert f"wiki:page:{site.onboarding}" in _deleted(batches)
    assert {s.doc_id: s.acl for s in connector.list_ids()} == {guide: unscoped.acl}
    with pytest.raises(DocumentGone):
        connector.fetch(f"wiki:page:{site.onboarding}")
    assert connector.fetch(guide).content == b"%PDF-1.4 fake guide"


def test_without_globs_every_page_is_read_a_dot_title_too(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    # `*` and `**` match no segment that starts with `.`: the default `**/*` must not
    # drop a page called ".NET guidelines" (every page was read before globs applied).
    dotnet = fake.add_page("ENG", ".NET guidelines", "<p>Use nullable types.</p>", parent=site.home)
    connector = connector_for()
    docs = _docs(list(connector.changes(None)))
    assert docs[f"wiki:page:{dotnet}"].path == "ENG/Home/.NET guidelines"
    assert f"wiki:page:{dotnet}" in {s.doc_id for s in connector.list_ids()}
    assert connector.fetch(f"wiki:page:{dotnet}").content


def test_a_failed_page_retried_after_an_exclude_was_added_is_dropped_unread(
    fake: FakeConfluence, site: Site, connector_for: ConnectorFactory
) -> None:
    # Runbook's permissions cannot be read: the cursor keeps it to be read again.
    fake.fail_next(None, 500, path=f"/wiki/rest/api/content/{site.runbook}/restriction")
    first = list(connector_for().changes(None))
    assert f"wiki:page:{site.runbook}" in {f.doc_id for b in first for f in b.failures}
    fake.clear_faults()
    fake.clear_calls()

    scoped = connector_for(source_overrides={"exclude": ["OPS/**"]})
    later = list(scoped.changes(first[-1].cursor))
    assert f"wiki:page:{site.runbook}" in _deleted(later)
    assert not [f for b in later for f in b.failures]
    assert f"wiki:page:{site.runbook}" not in _docs(later)
    assert _body_reads(fake, site.runbook) == 0
