"""S3 keys that spell a folder oddly (``hr/./x``, ``a/../hr/x``, ``hr//x``, ``/hr/x``).

A key is an opaque string, so these are objects of their own; but the rules and
globs read ``bucket/key`` as a path. Each is held to the rules of every folder it
can be read as: an odd spelling never dodges an exclude or the ``hr/**`` rule.
"""

from __future__ import annotations

from connectors.s3.connector import S3Connector
from core.acl import Principal
from pipelines.config import SourceConfig
from tests.connectors.s3.fake import FakeS3, make_source_config

ODD_HR_KEYS = ["hr/./salaries.md", "public/../hr/bonus.md", "hr//pay.md", "/hr/leading.md"]
STAFF = Principal.of("sam", ["staff"])
HR = Principal.of("dana", ["staff", "hr"])


def listing(connector) -> dict:
    return {d.path: d for b in connector.changes(None) for d in b.documents}


def test_dot_segments_match_no_default_glob_and_slashes_are_held_to_the_hr_rule(
    fake_s3: FakeS3, s3_connector
):
    fake_s3.seed({key: "pay data" for key in ODD_HR_KEYS} | {"public/handbook.md": "hello"})
    connector = s3_connector()
    docs = listing(connector)
    b = fake_s3.bucket
    # `**` never matches a `.` or `..` segment: such keys are only listed when named.
    assert sorted(docs) == [f"{b}//hr/leading.md", f"{b}/hr//pay.md", f"{b}/public/handbook.md"]
    policy = connector.scope.acl
    for path in (f"{b}//hr/leading.md", f"{b}/hr//pay.md"):
        acl = policy.acl_for(docs[path])
        assert acl.permits(HR) and not acl.permits(STAFF), path
    assert policy.acl_for(docs[f"{b}/public/handbook.md"]).permits(STAFF)


def test_keys_with_dot_segments_named_by_include_are_held_to_every_folder(
    fake_s3: FakeS3, tmp_path
):
    fake_s3.seed({key: "pay data" for key in ODD_HR_KEYS})
    b = fake_s3.bucket
    data = make_source_config(fake_s3, "archive", tmp_path)
    data["acl"]["default"] = {"allow_groups": ["staff"]}
    data["include"] = ["**/*", f"{b}/*/../**", f"{b}/hr/./*"]
    source = SourceConfig.model_validate(data)
    connector = S3Connector(source.scope(), source.s3)
    try:
        docs = listing(connector)
    finally:
        connector.close()
    assert len(docs) == len(ODD_HR_KEYS)
    policy = connector.scope.acl
    for path, doc in docs.items():
        # As written no rule matches a `.`/`..` segment (default: staff); as the
        # place it names it is under hr/: only who both allow, never all staff.
        acl = policy.acl_for(doc)
        assert acl.permits(HR) and not acl.permits(STAFF), path


def test_odd_keys_cannot_dodge_an_exclude(fake_s3: FakeS3, s3_connector):
    fake_s3.seed({key: "pay data" for key in ODD_HR_KEYS} | {"public/handbook.md": "hello"})
    connector = s3_connector(exclude=[f"{fake_s3.bucket}/hr/**"])
    listed = {d.path for b in connector.changes(None) for d in b.documents}
    assert listed == {f"{fake_s3.bucket}/public/handbook.md"}
    assert {s.path for s in connector.list_ids()} == listed
