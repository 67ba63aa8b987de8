"""Confluence end to end: a fake Confluence Cloud on loopback, `trove ingest`, searches as people.

Space permissions, page and ancestor restrictions (an AND across layers), groups
synced into the directory and resolved at query time, hidden e-mails failing
closed — through the real connector, parser, model and embedded index.
"""

from __future__ import annotations

import pytest

from tests.connectors.confluence.fake import FakeConfluence, make_source_config
from tests.e2e.connector_harness import SearchAs, write_config
from trove.ingest import run_ingest

pytestmark = pytest.mark.model

ALICE, BOB, DAN = ("alice@example.com", "bob@example.com", "dan@example.com")  # dan: no group
# Carol's e-mail is hidden in Confluence, so the directory cannot map it to her
# accountId: she reads nothing (fail closed). Her account token in a verified
# groups claim changes nothing: claim entries are groups, never identities.
CAROL = "carol@example.com"
CAROL_TOKEN = ("wiki:user:u-carol",)
QUERIES = {
    "home": "welcome to the engineering space",
    "runbook": "restart the payments service runbook",
    "leads": "promotion calibration for engineering leads",
    "payroll": "payroll run schedule finance",
}


@pytest.fixture(scope="module")
def wiki(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("confluence")
    fake = FakeConfluence().start()
    fake.add_user("u-alice", "Alice", ALICE)
    fake.add_user("u-bob", "Bob", "Bob@Example.com")
    fake.add_user("u-carol", "Carol", None)
    fake.add_user("u-dan", "Dan", DAN)
    fake.add_group("eng", ["u-alice", "u-bob", "u-carol"])
    fake.add_group("leads", ["u-bob", "u-carol"])
    fake.add_group("finance", ["u-carol"])
    fake.add_space("ENG", "Engineering", groups=["eng"])
    fake.add_space("FIN", "Finance", groups=["finance"])
    home = fake.add_page("ENG", "Home", "<p>Welcome to the engineering space.</p>")
    runbook = fake.add_page(
        "ENG", "Runbook", "<p>How to restart the payments service safely.</p>", parent=home
    )
    people = fake.add_page("ENG", "People", "<p>People practices.</p>", parent=home)
    leads = fake.add_page(
        "ENG", "Leads", "<p>Promotion calibration notes for engineering leads.</p>", parent=people
    )
    payroll = fake.add_page("FIN", "Payroll", "<p>The payroll run schedule for finance.</p>")
    # People is restricted to the leads group; Leads itself to bob and carol by account.
    fake.restrict_page(people, groups=["leads"])
    fake.restrict_page(leads, users=["u-bob", "u-alice"])
    ids = {"home": home, "runbook": runbook, "people": people, "leads": leads, "payroll": payroll}
    config = write_config(tmp, make_source_config(fake, "wiki", token_file=tmp / "token",
                                                  spaces=["ENG", "FIN"]))  # fmt: skip
    first = run_ingest(config)["sources"]["wiki"]
    search = SearchAs(config)
    yield fake, ids, config, first, search
    search.close()
    fake.stop()


def doc(ids, name: str) -> str:
    return f"wiki:page:{ids[name]}"


def check(search: SearchAs, ids, expected: dict[tuple, set[str]]) -> None:
    for (user, groups), names in expected.items():
        allowed = {doc(ids, n) for n in names}
        readable = search.readable_docs(user, groups)
        # "People" has no words of the queries; who reads it is checked separately.
        assert readable - {doc(ids, "people")} == allowed, user
        for name, query in QUERIES.items():
            found = search.docs(query, user, groups)
            assert set(found) <= readable, (user, query)
            if name in names:
                assert found[0] == doc(ids, name), (user, query, found)
            else:
                assert doc(ids, name) not in found, (user, query, found)


def test_space_page_and_ancestor_restrictions_hold_for_every_person(wiki):
    _fake, ids, _config, first, search = wiki
    assert first["added"] == 5 and first["documents_failed"] == []
    check(
        search,
        ids,
        {
            # Leads: ENG viewers ∩ People (group leads) ∩ Leads (bob, alice).
            # alice passes Leads but not People; carol passes People but not Leads.
            (ALICE, ()): {"home", "runbook"},
            (BOB, ()): {"home", "runbook", "leads"},
            (CAROL, CAROL_TOKEN): set(),
            (CAROL, ()): set(),
            (DAN, ()): set(),
        },
    )
    assert doc(ids, "people") in search.readable_docs(BOB)
    assert doc(ids, "people") not in search.readable_docs(ALICE)


def test_group_change_is_applied_at_query_time_and_ancestor_change_without_reembedding(wiki):
    fake, ids, config, _first, search = wiki
    fake.set_group_members("leads", ["u-bob", "u-carol", "u-alice"])  # alice joins leads
    summary = run_ingest(config)["sources"]["wiki"]
    assert summary["chunks_written"] == 0  # membership: no chunk rewritten
    assert search.docs(QUERIES["leads"], ALICE)[0] == doc(ids, "leads")

    fake.restrict_page(ids["home"], groups=["leads"])  # the top ancestor gets restricted
    summary = run_ingest(config)["sources"]["wiki"]
    # Home and Runbook gain a layer; People and Leads already required `leads`,
    # and a repeated layer changes nothing (an AND with itself).
    assert summary["acl_only"] == 2 and summary["chunks_embedded"] == 0
    assert doc(ids, "runbook") in search.readable_docs(BOB)
    fake.set_group_members("leads", ["u-bob"])  # carol and alice leave leads
    run_ingest(config)
    assert search.readable_docs(CAROL, CAROL_TOKEN) == set()
    assert doc(ids, "runbook") not in search.docs(QUERIES["runbook"], ALICE)


def test_edit_rename_and_delete(wiki):
    fake, ids, config, _first, search = wiki
    fake.edit_page(ids["payroll"], "<p>The payroll run moves to the 25th of each month.</p>")
    fake.rename_page(ids["payroll"], "Payroll calendar")
    fake.trash_page(ids["runbook"])
    fake.set_group_members("finance", ["u-carol", "u-dan"])
    summary = run_ingest(config)["sources"]["wiki"]
    assert summary["deleted"] == 1 and summary["changed"] >= 1
    assert search.docs("payroll moves to the 25th", DAN)[0] == doc(ids, "payroll")
    assert doc(ids, "runbook") not in search.readable_docs(BOB)


def test_a_listing_that_fails_part_way_indexes_what_it_got_and_resumes(tmp_path):
    import json

    from typer.testing import CliRunner

    from trove.cli import app

    fake = FakeConfluence().start()
    try:
        fake.add_user("u-alice", "Alice", ALICE)
        fake.add_group("eng", ["u-alice"])
        fake.add_space("ENG", "Engineering", groups=["eng"])
        fake.add_space("OPS", "Operations", groups=["eng"])
        fake.add_page("ENG", "Deploys", "<p>Deploys happen on Tuesdays after the freeze.</p>")
        fake.add_page("OPS", "Pager", "<p>The pager rotation changes every Monday.</p>")
        ops = fake.spaces["OPS"].id
        fake.fail_next(None, 500, path=f"/wiki/api/v2/spaces/{ops}/pages")  # OPS keeps failing
        source = make_source_config(fake, "wiki", token_file=tmp_path / "t", spaces=["ENG", "OPS"])
        source["retry"] = {"max_attempts": 2, "base_delay_s": 0.01, "max_total_s": 1}
        config = write_config(tmp_path, source)
        runner = CliRunner()
        first = runner.invoke(app, ["ingest", "--config", str(config), "--json"])
        assert first.exit_code == 3, first.output
        summary = json.loads(first.stdout)["sources"]["wiki"]
        assert summary["added"] == 1 and "still failing" in summary["sync_error"]
        search = SearchAs(config)
        assert len(search.readable_docs(ALICE)) == 1  # ENG's page serves already
        fake.clear_faults()
        second = runner.invoke(app, ["ingest", "--config", str(config), "--json"])
        assert second.exit_code == 0, second.output
        summary = json.loads(second.stdout)["sources"]["wiki"]
        assert summary["added"] == 1 and summary["sync_error"] is None  # only OPS was left
        assert len(search.readable_docs(ALICE)) == 2
        search.close()
    finally:
        fake.stop()


def test_an_excluded_path_never_reaches_the_index_and_a_later_exclude_removes_it(tmp_path):
    """Regression: the connector ignored `include`/`exclude`, so excluded pages were indexed."""
    from retrieval.index.factory import open_index

    def indexed(search: SearchAs) -> set[str]:
        index = open_index(search.settings.index)
        try:
            return {chunk_id.rsplit("#", 1)[0] for chunk_id in index.all_acls()}
        finally:
            index.close()

    fake = FakeConfluence().start()
    try:
        fake.add_user("u-alice", "Alice", ALICE)
        fake.add_group("eng", ["u-alice"])
        fake.add_space("ENG", "Engineering", groups=["eng"])
        home = fake.add_page("ENG", "Home", "<p>Welcome to the engineering space.</p>")
        hr = fake.add_page("ENG", "HR", "<p>Where people operations keep notes.</p>", parent=home)
        bands = fake.add_page("ENG", "Salary bands", "<p>Salary bands per level.</p>", parent=hr)
        archive = fake.add_page("ENG", "Archive", "<p>Old deploy notes.</p>", parent=home)
        ids = {"home": home, "hr": hr, "bands": bands, "archive": archive}
        page = {name: f"wiki:page:{page_id}" for name, page_id in ids.items()}
        source = make_source_config(fake, "wiki", token_file=tmp_path / "t", spaces=["ENG"])
        source["exclude"] = ["ENG/Home/HR/**"]  # below HR, not HR itself
        config = write_config(tmp_path, source)
        first = run_ingest(config)["sources"]["wiki"]
        assert first["added"] == 3 and first["documents_failed"] == []
        search = SearchAs(config)
        assert indexed(search) == {page["home"], page["hr"], page["archive"]}
        assert page["bands"] not in search.docs("salary bands per level", ALICE)

        # An exclude added later drops what was indexed, and an edit does not bring it back.
        source["exclude"] = ["ENG/Home/HR/**", "ENG/Home/Archive"]
        write_config(tmp_path, source)
        second = run_ingest(config)["sources"]["wiki"]
        assert second["deleted"] == 1
        assert indexed(search) == {page["home"], page["hr"]}
        fake.edit_page(archive, "<p>Old deploy notes, revised.</p>")
        fake.edit_page(bands, "<p>Salary bands per level, revised.</p>")
        third = run_ingest(config)["sources"]["wiki"]
        assert third["added"] == third["changed"] == 0 and third["documents_failed"] == []
        assert indexed(search) == {page["home"], page["hr"]}
        search.close()
    finally:
        fake.stop()
