"""S3 end to end: a moto S3 server on loopback, `trove ingest`, searches as people.

S3 carries no reader permissions, so `trove.yaml` rules by `bucket/key` decide
(deny by default); the real boto3 client, parser, model and index are used.
"""

from __future__ import annotations

import pytest
import yaml

from tests.connectors.s3.fake import FakeS3, make_source_config
from tests.e2e.connector_harness import SearchAs, write_config
from trove.ingest import run_ingest

pytestmark = pytest.mark.model

STAFF = ("sam@acme.com", ("staff",))
HR = ("hana@acme.com", ("staff", "hr"))
EXEC = ("erik@acme.com", ("exec",))


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3")
    fake = FakeS3().start()
    fake.reset()
    fake.seed()
    source = make_source_config(fake, "archive", tmp, page_size=2)
    config = write_config(tmp, source)
    first = run_ingest(config)["sources"]["archive"]
    search = SearchAs(config)
    yield fake, config, source, first, search
    search.close()
    fake.stop()


def doc(fake: FakeS3, key: str) -> str:
    return f"archive:{fake.bucket}/{key}"


def test_rules_decide_who_reads_what_and_unmatched_keys_are_denied(bucket):
    fake, _config, _source, first, search = bucket
    assert first["added"] == 4 and first["documents_failed"] == []  # the folder marker is skipped
    handbook, travel = doc(fake, "public/handbook.md"), doc(fake, "public/travel.txt")
    salaries, merger = doc(fake, "hr/salaries.md"), doc(fake, "private/merger.md")
    assert search.readable_docs(*STAFF) == {handbook, travel}
    assert search.readable_docs(*HR) == {handbook, travel, salaries}
    assert search.readable_docs(*EXEC) == set()  # private/** matches no rule: nobody
    assert search.docs("salary band pay range", *HR)[0] == salaries
    assert salaries not in search.docs("salary band pay range", *STAFF)
    for user, groups in (STAFF, HR, EXEC):
        assert merger not in search.docs("merger closes in March Project Falcon", user, groups)


def test_edit_delete_rename_and_a_rule_change(bucket):
    fake, config, source, _first, search = bucket
    fake.put(
        "public/travel.txt", "Travel policy: book premium economy for flights over six hours.\n"
    )
    fake.delete("public/handbook.md")
    fake.rename("hr/salaries.md", "hr/bands.md")
    summary = run_ingest(config)["sources"]["archive"]
    assert (summary["changed"], summary["added"], summary["deleted"]) == (1, 1, 2)
    assert summary["chunks_embedded"] <= 2  # the renamed text comes from the cache
    assert search.docs("premium economy flights", *STAFF)[0] == doc(fake, "public/travel.txt")
    assert search.readable_docs(*HR) == {doc(fake, "public/travel.txt"), doc(fake, "hr/bands.md")}

    source["acl"]["rules"].append({"match": f"{fake.bucket}/private/**", "allow_groups": ["exec"]})
    (config.parent / "trove.yaml").write_text(
        yaml.safe_dump({**yaml.safe_load(config.read_text()), "sources": [source]})
    )
    summary = run_ingest(config)["sources"]["archive"]
    assert summary["acl_only"] == 1 and summary["chunks_embedded"] == 0
    search.settings = search.settings  # same index and state paths
    assert search.docs("merger closes in March", *EXEC)[0] == doc(fake, "private/merger.md")
