"""Websites end to end: a fake site on loopback (robots, sitemaps, links), `trove ingest`, searches.

Pages are public unless a rule says otherwise; here `/docs/**` is for staff.
The second run must use conditional GETs and delete what the site removed.
"""

from __future__ import annotations

import pytest

from tests.connectors.web.fake import FakeWeb, make_source_config
from tests.e2e.connector_harness import SearchAs, write_config
from trove.ingest import run_ingest

pytestmark = pytest.mark.model

STAFF = ("sam@acme.com", ("staff",))
VISITOR = ("vic@example.com", ())


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    fake = FakeWeb().start()
    fake.seed()
    source = make_source_config(
        fake, "intranet", acl_rules=[{"match": "/docs/**", "allow_groups": ["staff"]}]
    )
    config = write_config(tmp, source)
    first = run_ingest(config)["sources"]["intranet"]
    search = SearchAs(config)
    yield fake, config, first, search
    search.close()
    fake.stop()


def by_path(search: SearchAs, user, groups) -> set[str]:
    """The readable pages as URL paths (ids are `intranet:{canonical URL}`)."""
    return {doc_id.split("/", 3)[3] if doc_id.count("/") >= 3 else "" for doc_id in
            search.readable_docs(user, groups)}  # fmt: skip


def test_crawl_respects_robots_and_host_scope_and_rules_gate_the_docs(site):
    fake, _config, first, search = site
    assert first["documents_failed"] == []
    assert by_path(search, *VISITOR) == {"", "about"}
    assert by_path(search, *STAFF) == {"", "about", "docs/vacation", "docs/expenses"}
    assert not fake.requested("/private/salaries")  # robots.txt disallows it
    top = search.docs("how many days of paid vacation", *STAFF)
    assert top and top[0].endswith("/docs/vacation")
    assert not any(d.endswith("/docs/vacation") for d in search.docs("paid vacation", *VISITOR))


def test_second_crawl_is_conditional_and_applies_edits_and_removals(site):
    fake, config, _first, search = site
    fake.requests.clear()
    fake.edit("/docs/vacation", "Employees now get 28 days of paid vacation per year.")
    fake.gone("/about")
    summary = run_ingest(config)["sources"]["intranet"]
    assert (summary["changed"], summary["deleted"]) == (1, 1)
    home = fake.requested("/")
    assert home and home[-1].headers.get("If-None-Match")  # a conditional GET, answered 304
    assert by_path(search, *VISITOR) == {""}
    assert search.docs("28 days of paid vacation", *STAFF)[0].endswith("/docs/vacation")
