"""S3Connector against moto in server mode, through real boto3 over HTTP."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from connectors.errors import ConnectorError
from connectors.http import SourceAuthError, SourceUnavailable
from connectors.s3.client import ObjectNotFound, ObjectTooLarge
from connectors.s3.connector import S3Connector
from core.acl import Principal
from core.acl_policy import AclPolicy
from pipelines.config import SourceConfig
from tests.connectors.s3.fake import SAMPLE_OBJECTS, FakeS3, make_source_config

MiB = 1024 * 1024


class Recorder:
    """Every S3 operation and HTTP request a connector's client makes."""

    def __init__(self, client: Any) -> None:
        self.operations: list[str] = []
        self.requests: list[Any] = []
        client.meta.events.register("before-call.s3", self._call)
        client.meta.events.register("before-send.s3", self._send)

    def _call(self, model: Any, **_: Any) -> None:
        self.operations.append(model.name)

    def _send(self, request: Any, **_: Any) -> None:
        self.requests.append(request)


def run(connector: S3Connector, cursor: str | None = None) -> list:
    return list(connector.changes(cursor))


def listed(batches: list) -> dict[str, Any]:
    return {d.doc_id: d for b in batches for d in b.documents}


def test_first_sync_lists_every_object_without_downloading(fake_s3: FakeS3, s3_connector):
    fake_s3.seed()
    connector = s3_connector()
    calls = Recorder(connector.client)
    batches = run(connector)

    assert len(batches) == 1 and batches[0].complete
    docs = listed(batches)
    assert sorted(docs) == [
        "archive:trove-docs/hr/salaries.md",
        "archive:trove-docs/private/merger.md",
        "archive:trove-docs/public/handbook.md",
        "archive:trove-docs/public/travel.txt",
    ]
    doc = docs["archive:trove-docs/public/handbook.md"]
    body = SAMPLE_OBJECTS["public/handbook.md"].encode()
    assert doc.path == "trove-docs/public/handbook.md"
    assert doc.uri == f"{fake_s3.url}/trove-docs/public/handbook.md"
    assert doc.doc_type == "md" and doc.title == "handbook"
    assert doc.size == len(body)
    assert doc.version == f"{fake_s3.etag('public/handbook.md')}:{len(body)}"
    assert isinstance(doc.modified_at, datetime) and doc.modified_at.tzinfo is not None
    assert doc.content is None and doc.local_path is None
    assert not doc.acl.grants_anyone  # no native ACL: config rules decide
    assert "GetObject" not in calls.operations
    assert calls.operations == ["ListObjectsV2"]

    fetched = connector.fetch(doc.doc_id)
    assert fetched.content == body
    assert fetched.version == doc.version and fetched.path == doc.path
    assert calls.operations[-1] == "GetObject"


def test_paging_yields_one_batch_per_page_and_only_the_last_is_complete(fake_s3, s3_connector):
    for n in range(5):
        fake_s3.put(f"docs/{n}.txt", f"document {n}")
    connector = s3_connector(page_size=2)
    calls = Recorder(connector.client)
    batches = run(connector)

    assert [len(b.documents) for b in batches] == [2, 2, 1]
    assert [b.complete for b in batches] == [False, False, True]
    assert calls.operations == ["ListObjectsV2"] * 3
    assert all("max-keys=2" in r.url for r in calls.requests)
    assert json.loads(batches[0].cursor)["start_after"] == "docs/1.txt"
    assert json.loads(batches[1].cursor)["start_after"] == "docs/3.txt"
    assert json.loads(batches[2].cursor)["done"] is True
    assert len(listed(batches)) == 5


def test_a_failed_listing_resumes_after_the_last_batch_without_claiming_complete(
    fake_s3, s3_connector
):
    for n in range(5):
        fake_s3.put(f"docs/{n}.txt", f"document {n}")
    connector = s3_connector(page_size=2)
    lists = 0

    def fail_third_page(model: Any, **_: Any) -> None:
        nonlocal lists
        if model.name == "ListObjectsV2":
            lists += 1
            if lists == 3:
                raise EndpointConnectionError(endpoint_url=fake_s3.url)

    connector.client.meta.events.register("before-call.s3", fail_third_page)
    got = []
    with pytest.raises(SourceUnavailable, match="cannot reach"):
        for batch in connector.changes(None):
            got.append(batch)
    # Page 2 was read but is held back until page 3 answers: only page 1 was handed over.
    assert [sorted(listed([b])) for b in got] == [
        ["archive:trove-docs/docs/0.txt", "archive:trove-docs/docs/1.txt"]
    ]
    assert not got[0].complete

    resumed = run(connector, got[0].cursor)
    assert sorted(listed(resumed)) == [f"archive:trove-docs/docs/{n}.txt" for n in (2, 3, 4)]
    # It did not list docs/0 and docs/1 this time, so it must not let the pipeline prune.
    assert not any(b.complete for b in resumed)
    assert json.loads(resumed[-1].cursor)["done"] is True

    again = run(connector, resumed[-1].cursor)  # the next run lists from the top
    assert len(listed(again)) == 5 and again[-1].complete


def test_a_cursor_for_another_prefix_is_ignored(fake_s3, s3_connector):
    fake_s3.put("a/1.txt", "one")
    fake_s3.put("b/2.txt", "two")
    foreign = json.dumps({"v": 1, "bucket": "trove-docs", "prefix": "zzz/", "start_after": "b"})
    batches = run(s3_connector(), foreign)
    assert len(listed(batches)) == 2 and batches[-1].complete


def test_changed_content_changes_the_version_and_identical_bytes_do_not(fake_s3, s3_connector):
    fake_s3.seed()
    connector = s3_connector()
    before = {k: d.version for k, d in listed(run(connector)).items()}
    fake_s3.put("public/travel.txt", "Travel policy: premium economy over six hours.\n")
    fake_s3.put("public/handbook.md", SAMPLE_OBJECTS["public/handbook.md"])  # same bytes again
    after = {k: d.version for k, d in listed(run(connector)).items()}

    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"archive:trove-docs/public/travel.txt"}


def test_deleted_and_renamed_objects(fake_s3, s3_connector):
    fake_s3.seed()
    connector = s3_connector()
    first = listed(run(connector))
    fake_s3.delete("private/merger.md")
    fake_s3.rename("public/travel.txt", "public/policies/travel.txt")
    batches = run(connector)
    second = listed(batches)

    assert batches[-1].complete  # the pipeline prunes what this listing lacks
    assert "archive:trove-docs/private/merger.md" not in second
    assert "archive:trove-docs/public/travel.txt" not in second
    moved = second["archive:trove-docs/public/policies/travel.txt"]
    assert moved.version == first["archive:trove-docs/public/travel.txt"].version
    assert moved.path == "trove-docs/public/policies/travel.txt"
    assert {d.doc_id for d in connector.list_ids()} == set(second)


def test_folder_marker_keys_are_skipped(fake_s3, s3_connector):
    fake_s3.seed()
    fake_s3.put("empty-folder/", b"")
    fake_s3.put("nested/dir/", b"")
    connector = s3_connector()
    ids = set(listed(run(connector)))
    assert len(ids) == 4
    assert not any(i.endswith("/") for i in ids)
    assert {s.doc_id for s in connector.list_ids()} == ids


def test_multipart_etag_is_an_opaque_stamp(fake_s3, s3_connector):
    etag = fake_s3.put_multipart("big/report.txt", [b"a" * (5 * MiB), b"tail"])
    assert etag.endswith("-2")
    connector = s3_connector()
    doc = listed(run(connector))["archive:trove-docs/big/report.txt"]
    assert doc.version == f"{etag}:{5 * MiB + 4}"
    fetched = connector.fetch(doc.doc_id)
    assert fetched.version == doc.version
    assert fetched.content[-4:] == b"tail" and len(fetched.content) == 5 * MiB + 4


def test_path_style_addressing_and_no_default_checksums(fake_s3, s3_connector):
    fake_s3.put("public/a.txt", "alpha")
    connector = s3_connector(addressing_style="path")
    config = connector.client.meta.config
    assert config.s3 == {"addressing_style": "path"}
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}

    calls = Recorder(connector.client)
    run(connector)
    connector.fetch("archive:trove-docs/public/a.txt")
    list_url, get_url = calls.requests[0].url, calls.requests[1].url
    assert list_url.startswith(f"{fake_s3.url}/trove-docs?list-type=2")  # MinIO-style path
    assert get_url == f"{fake_s3.url}/trove-docs/public/a.txt"
    get_headers = {k.lower() for k in calls.requests[1].headers}
    assert "x-amz-checksum-mode" not in get_headers  # would break S3-compatible stores


def test_prefix_include_and_exclude_match_bucket_and_key(fake_s3, s3_connector):
    fake_s3.seed()
    fake_s3.put("public/draft.tmp", "scratch")
    ids = set(listed(run(s3_connector(prefix="public/", exclude=["**/*.tmp"]))))
    assert ids == {"archive:trove-docs/public/handbook.md", "archive:trove-docs/public/travel.txt"}
    ids = set(listed(run(s3_connector(include=["trove-docs/hr/**"]))))
    assert ids == {"archive:trove-docs/hr/salaries.md"}


def test_acl_rules_from_the_source_config_decide(fake_s3, s3_source):
    fake_s3.seed()
    source = s3_source()
    policy = AclPolicy.from_config(source.acl)
    connector = S3Connector(source.scope(), source.s3)
    try:
        docs = listed(run(connector))
    finally:
        connector.close()
    staff = Principal.of("ann@example.com", ["staff"])
    hr = Principal.of("hal@example.com", ["hr"])
    acl = {k.split("/", 1)[1]: policy.acl_for(d) for k, d in docs.items()}
    assert acl["public/handbook.md"].permits(staff) and not acl["public/handbook.md"].permits(hr)
    assert acl["hr/salaries.md"].permits(hr) and not acl["hr/salaries.md"].permits(staff)
    assert not acl["private/merger.md"].grants_anyone  # no rule, no default: denied


def test_missing_bucket_is_a_clear_connector_error(fake_s3, s3_connector):
    connector = s3_connector(bucket="no-such-bucket")
    with pytest.raises(ConnectorError) as info:
        run(connector)
    message = str(info.value)
    assert "no-such-bucket" in message and "does not exist" in message
    assert fake_s3.secret_access_key not in message and fake_s3.access_key_id not in message
    with pytest.raises(ConnectorError, match="does not exist"):
        list(connector.list_ids())


def test_keys_from_env_and_file_and_never_in_messages(fake_s3, s3_source, tmp_path, monkeypatch):
    fake_s3.seed()
    key_id, secret = fake_s3.create_user("lister", ["s3:ListBucket"])
    monkeypatch.setenv("TEST_S3_KEY_ID", key_id)
    secret_file = tmp_path / "s3-secret"
    secret_file.write_text(secret + "\n")
    fake_s3.enable_auth()

    source = s3_source(
        access_key_id={"env": "TEST_S3_KEY_ID"}, secret_access_key={"file": str(secret_file)}
    )
    connector = S3Connector(source.scope(), source.s3)
    # s3:ListBucket is enough to list (the keys were read: moto checks them now) ...
    docs = listed(run(connector))
    assert len(docs) == 4
    # ... and without s3:GetObject a fetch is refused with a hint, not with the keys.
    with pytest.raises(SourceAuthError) as info:
        connector.fetch("archive:trove-docs/public/handbook.md")
    text = f"{info.value} {info.value.__cause__}"
    assert "AccessDenied" in str(info.value) and "s3:GetObject" in str(info.value)
    assert key_id not in text and secret not in text
    connector.close()

    monkeypatch.setenv("TEST_S3_KEY_ID", "AKIAWRONGWRONGWRONG1")
    wrong = S3Connector(source.scope(), source.s3)
    with pytest.raises(SourceAuthError) as info:
        run(wrong)
    text = f"{info.value} {info.value.__cause__}"
    assert "InvalidAccessKeyId" in str(info.value)
    assert "AKIAWRONGWRONGWRONG1" not in text and secret not in text
    wrong.close()


def test_listing_needs_list_bucket_as_aws_documents_it(fake_s3, s3_source, monkeypatch):
    # The fake widens s3:ListBucket to the operation names moto checks; it must
    # not widen anything else, or the refusal above would prove nothing.
    fake_s3.seed()
    key_id, secret = fake_s3.create_user("reader", ["s3:GetObject"])
    monkeypatch.setenv("TEST_S3_KEY_ID", key_id)
    monkeypatch.setenv("TEST_S3_SECRET", secret)
    fake_s3.enable_auth()
    source = s3_source(
        access_key_id={"env": "TEST_S3_KEY_ID"}, secret_access_key={"env": "TEST_S3_SECRET"}
    )
    connector = S3Connector(source.scope(), source.s3)
    with pytest.raises(SourceAuthError) as info:
        run(connector)
    assert "AccessDenied" in str(info.value) and "s3:ListBucket" in str(info.value)
    connector.close()


def test_a_missing_secret_names_where_it_was_looked_for(s3_source, monkeypatch):
    monkeypatch.delenv("TEST_S3_UNSET", raising=False)
    source = s3_source(access_key_id={"env": "TEST_S3_UNSET"})
    with pytest.raises(ConnectorError, match="TEST_S3_UNSET"):
        S3Connector(source.scope(), source.s3)


def test_an_unreachable_endpoint_is_source_unavailable(s3_connector):
    connector = s3_connector(endpoint_url="http://127.0.0.1:9", connect_timeout_s=1)
    with pytest.raises(SourceUnavailable) as info:
        run(connector)
    assert "cannot reach http://127.0.0.1:9" in str(info.value)


def test_fetch_after_delete_raises_object_not_found(fake_s3, s3_connector):
    fake_s3.seed()
    connector = s3_connector()
    doc_id = "archive:trove-docs/hr/salaries.md"
    assert doc_id in listed(run(connector))
    fake_s3.delete("hr/salaries.md")
    with pytest.raises(ObjectNotFound, match="no longer exists"):
        connector.fetch(doc_id)
    assert isinstance(ObjectNotFound("x"), ConnectorError)


def test_fetch_refuses_foreign_ids_and_objects_over_the_size_limit(fake_s3, s3_connector):
    fake_s3.put("public/big.txt", "x" * 2048)
    connector = s3_connector(limits={"max_bytes": 1024})
    with pytest.raises(ObjectTooLarge, match="2048 bytes"):
        connector.fetch("archive:trove-docs/public/big.txt")
    with pytest.raises(ConnectorError, match="not a document of source"):
        connector.fetch("other:trove-docs/public/big.txt")


def test_make_source_config_is_a_valid_source(fake_s3, tmp_path):
    data = make_source_config(fake_s3, "lake", tmp_path, prefix="public/")
    source = SourceConfig.model_validate(data)
    assert source.type == "s3" and source.s3.endpoint_url == fake_s3.url
    assert source.s3.access_key_id.read() == fake_s3.access_key_id
    assert source.acl.default is None and source.acl.rules[0].match == "trove-docs/public/**"


def test_config_refuses_half_a_key_pair():
    with pytest.raises(ValueError, match="both"):
        SourceConfig.model_validate(
            {"name": "x", "type": "s3", "s3": {"bucket": "abc", "access_key_id": {"env": "K"}}}
        )
