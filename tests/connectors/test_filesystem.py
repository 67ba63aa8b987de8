import dataclasses
import os

import pytest

from connectors.errors import ConnectorError
from connectors.filesystem import FilesystemConnector
from pipelines.config import SourceConfig


def make_tree(root):
    files = {
        "readme.md": "# hi",
        "hr/pay.docx": "x",
        "hr/deep/notes.txt": "notes",
        "security/plan.md": "plan",
        ".hidden/secret.md": "no",
        "draft.tmp": "tmp",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return files


def connector(root, **kw):
    return FilesystemConnector(SourceConfig(name="docs", path=root, **kw).scope())


def test_recursive_listing_with_globs_and_stable_ids(tmp_path):
    make_tree(tmp_path)
    scan = connector(tmp_path, exclude=["**/*.tmp"]).scan()
    paths = sorted(d.path for d in scan.documents)
    assert paths == ["hr/deep/notes.txt", "hr/pay.docx", "readme.md", "security/plan.md"]
    doc = next(d for d in scan.documents if d.path == "hr/pay.docx")
    assert doc.doc_id == "docs:hr/pay.docx"
    assert doc.doc_type == "docx"
    assert doc.uri.startswith("file://") and doc.uri.endswith("/hr/pay.docx")
    assert doc.version.startswith("sha256:")
    assert not doc.acl.grants_anyone  # files carry no native permissions


def test_include_narrows(tmp_path):
    make_tree(tmp_path)
    scan = connector(tmp_path, include=["hr/**"]).scan()
    assert sorted(d.path for d in scan.documents) == ["hr/deep/notes.txt", "hr/pay.docx"]


def test_version_changes_with_content_only(tmp_path):
    make_tree(tmp_path)
    first = {d.path: d.version for d in connector(tmp_path).scan().documents}
    (tmp_path / "readme.md").write_text("# changed")
    second = {d.path: d.version for d in connector(tmp_path).scan().documents}
    assert first["readme.md"] != second["readme.md"]
    assert first["hr/pay.docx"] == second["hr/pay.docx"]


def test_known_stats_skip_rehashing_but_content_changes_are_seen(tmp_path):
    make_tree(tmp_path)
    first = connector(tmp_path).scan()
    # A lie in `known` with matching size/mtime is trusted: proof that no hashing happened.
    known = dict(first.stats)
    stat = known["readme.md"]
    known["readme.md"] = type(stat)(stat.size, stat.mtime_ns, "sha256:remembered")
    again = {d.path: d.version for d in connector(tmp_path).scan(known=known).documents}
    assert again["readme.md"] == "sha256:remembered"
    (tmp_path / "readme.md").write_text("# a longer body now")
    changed = {d.path: d.version for d in connector(tmp_path).scan(known=known).documents}
    assert (
        changed["readme.md"].startswith("sha256:") and changed["readme.md"] != "sha256:remembered"
    )


def test_deleted_files_disappear_from_the_listing(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "security/plan.md").unlink()
    assert "security/plan.md" not in {d.path for d in connector(tmp_path).scan().documents}


def test_symlink_out_of_the_root_is_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("s")
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.md").write_text("ok")
    os.symlink(outside / "secret.md", root / "link.md")
    assert [d.path for d in connector(root).scan().documents] == ["ok.md"]


def test_missing_root_is_a_connector_error(tmp_path):
    with pytest.raises(ConnectorError, match="folder not found"):
        connector(tmp_path / "absent").scan()


def test_contract_fetch_reads_one_file_and_refuses_what_the_listing_would_skip(tmp_path):
    from connectors.errors import DocumentGone

    make_tree(tmp_path)
    fs = connector(tmp_path, exclude=["**/*.tmp"])
    (batch,) = fs.changes(None)
    assert batch.complete and batch.cursor
    listed = {d.doc_id: d for d in batch.documents}
    fetched = fs.fetch("docs:hr/deep/notes.txt")
    # fetch hands over the bytes it read through a descriptor opened without links.
    notes = listed["docs:hr/deep/notes.txt"]
    assert fetched == dataclasses.replace(notes, local_path=None, content=b"notes")
    assert {s.doc_id for s in fs.list_ids()} == set(listed)
    for gone in ("docs:.hidden/secret.md", "docs:draft.tmp", "docs:missing.md", "other:readme.md"):
        with pytest.raises(DocumentGone):
            fs.fetch(gone)
    (tmp_path / "outside.md").write_text("x")
    os.symlink(tmp_path / "outside.md", tmp_path / "hr" / "link.md")
    with pytest.raises(DocumentGone, match="follow_symlinks is off"):
        fs.fetch("docs:hr/link.md")  # links are not followed by default
    following = connector(tmp_path, exclude=["**/*.tmp"], follow_symlinks=True)
    assert following.fetch("docs:hr/link.md").content == b"x"  # inside the root: followed
