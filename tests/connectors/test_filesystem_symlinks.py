"""Symbolic links in a filesystem source (issue 16): never a way to read what the rules forbid.

The reproducer: ``ln -s ../hr/salary-bands.xlsx handbook/pay-overview.xlsx``
needs no read access to the target, and must not publish the HR salary bands
under ``handbook/`` to all-staff or to the user denied on ``hr/**``.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

import pytest

from connectors.errors import ConnectorError, DocumentGone
from connectors.filesystem import FilesystemConnector, open_real_file
from core.acl import Principal
from core.acl_policy import AclPolicy, rule_paths
from pipelines.config import InjectionConfig, PiiConfig, SourceConfig
from pipelines.stages import (
    chunk_pending,
    embed_pending,
    parse_pending,
    scan_source,
    screen_pending,
    tag_pending,
    write_pending,
)
from pipelines.store import EmbeddingCache, StagingStore
from retrieval.index.embedded import EmbeddedIndex
from tests.pipelines.test_stages import DIM, CountingEncoder, fake_chunk, fake_parse

ACL = {
    "default": {"allow_groups": ["all-staff"]},
    "rules": [
        {"match": "hr/**", "allow_groups": ["hr"], "deny_users": ["mallory"]},
        {"match": "handbook/**", "allow_groups": ["all-staff"]},
    ],
}
SAM = Principal.of("sam", ["all-staff"])  # everyone
MALLORY = Principal.of("mallory", ["all-staff", "hr"])  # in hr, but denied on hr/**
DANA = Principal.of("dana", ["all-staff", "hr"])  # HR business partner
BANDS = "Salary bands: L4 Rotterdam 95000 to 120000 euro."
LINK = "handbook/pay-overview.xlsx"


def make_tree(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "hr").mkdir()
    (root / "hr" / "salary-bands.xlsx").write_text(BANDS)
    (root / "handbook").mkdir()
    (root / "handbook" / "welcome.md").write_text("Welcome to Northwind.")
    return root


def source(root: Path, follow_symlinks: bool = False, **kw) -> SourceConfig:
    # Only named when on, so these tests also run against the code before the option.
    follow = {"follow_symlinks": True} if follow_symlinks else {}
    return SourceConfig.model_validate(
        {"name": "docs", "path": str(root), "acl": ACL, **follow, **kw}
    )


def connector(root: Path, **kw) -> FilesystemConnector:
    return FilesystemConnector(source(root, **kw).scope())


def paths(fs: FilesystemConnector) -> list[str]:
    return sorted(d.path for d in fs.scan().documents)


def skipped(fs: FilesystemConnector) -> dict[str, str]:
    return {s.path: s.reason for s in fs.scan().skipped}


def acl_of(fs: FilesystemConnector, path: str):
    doc = next(d for d in fs.scan().documents if d.path == path)
    return fs.scope.acl.acl_for(doc)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = make_tree(tmp_path / "root")
    os.symlink("../hr/salary-bands.xlsx", root / LINK)  # the issue's exact command
    return root


# -- links are not followed by default ---------------------------------------------


def test_the_issue_reproducer_is_not_indexed_and_is_reported(tree, caplog):
    fs = connector(tree)
    with caplog.at_level(logging.WARNING, logger="connectors.filesystem"):
        scan = fs.scan()
    assert sorted(d.path for d in scan.documents) == ["handbook/welcome.md", "hr/salary-bands.xlsx"]
    assert {s.path: s.reason for s in scan.skipped} == {
        LINK: "symbolic link, not followed (follow_symlinks is off)"
    }
    assert LINK in caplog.text and "follow_symlinks is off" in caplog.text
    (batch,) = fs.changes(None)
    assert LINK not in {d.path for d in batch.documents}
    with pytest.raises(DocumentGone, match="follow_symlinks is off"):
        fs.fetch(f"docs:{LINK}")


def test_a_directory_link_is_not_walked(tree):
    os.symlink("../hr", tree / "handbook" / "hr-mirror")
    fs = connector(tree)
    assert paths(fs) == ["handbook/welcome.md", "hr/salary-bands.xlsx"]
    assert "follow_symlinks is off" in skipped(fs)["handbook/hr-mirror"]
    with pytest.raises(DocumentGone):
        fs.fetch("docs:handbook/hr-mirror/salary-bands.xlsx")


def test_a_symlinked_folder_in_the_middle_of_a_path_is_never_opened(tree):
    os.symlink("hr", tree / "hr-alias")
    with pytest.raises(DocumentGone):
        connector(tree).fetch("docs:hr-alias/salary-bands.xlsx")
    root_fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as info:
            open_real_file(root_fd, "hr-alias/salary-bands.xlsx")
        assert info.value.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK)
        fd, _ = open_real_file(root_fd, "hr/salary-bands.xlsx")  # the real path opens
        os.close(fd)
    finally:
        os.close(root_fd)


@pytest.mark.parametrize("follow", [False, True])
def test_a_link_cannot_dodge_an_exclude_glob(tmp_path, follow):
    root = make_tree(tmp_path / "root")
    (root / "secrets").mkdir()
    (root / "secrets" / "api-key.txt").write_text("sk-live-123")
    os.symlink("../secrets/api-key.txt", root / "handbook" / "key.txt")
    os.symlink("../secrets", root / "handbook" / "vault")
    fs = connector(root, exclude=["secrets/**"], follow_symlinks=follow)
    assert paths(fs) == ["handbook/welcome.md", "hr/salary-bands.xlsx"]
    with pytest.raises(DocumentGone):
        fs.fetch("docs:handbook/key.txt")


@pytest.mark.parametrize("follow", [False, True])
def test_a_link_cannot_dodge_hidden_file_skipping(tmp_path, follow):
    root = make_tree(tmp_path / "root")
    (root / ".private").mkdir()
    (root / ".private" / "diary.md").write_text("dear diary")
    os.symlink("../.private/diary.md", root / "handbook" / "diary.md")
    os.symlink("../.private", root / "handbook" / "private")
    fs = connector(root, follow_symlinks=follow)
    assert paths(fs) == ["handbook/welcome.md", "hr/salary-bands.xlsx"]
    reasons = skipped(fs)
    assert set(reasons) == {"handbook/diary.md", "handbook/private"}
    if follow:
        assert all("hidden" in r for r in reasons.values())


@pytest.mark.parametrize("follow", [False, True])
def test_links_out_of_the_root_dangling_or_looping_are_never_followed(tmp_path, follow):
    root = make_tree(tmp_path / "root")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("outside")
    os.symlink(outside / "secret.md", root / "handbook" / "out.md")
    os.symlink(outside, root / "handbook" / "out-dir")
    os.symlink("../hr/gone.xlsx", root / "handbook" / "dangling.xlsx")
    os.symlink("loop-b", root / "handbook" / "loop-a")
    os.symlink("loop-a", root / "handbook" / "loop-b")
    os.symlink("..", root / "handbook" / "up")  # a folder link back to an ancestor
    fs = connector(root, follow_symlinks=follow)
    assert paths(fs) == ["handbook/welcome.md", "hr/salary-bands.xlsx"]
    reasons = skipped(fs)
    names = ["out.md", "out-dir", "dangling.xlsx", "loop-a", "loop-b", "up"]
    assert set(reasons) == {f"handbook/{n}" for n in names}
    if follow:
        assert "outside the source root" in reasons["handbook/out.md"]
        assert "outside the source root" in reasons["handbook/out-dir"]
        assert "dangling" in reasons["handbook/dangling.xlsx"]
        assert "loop" in reasons["handbook/loop-a"] and "loop" in reasons["handbook/loop-b"]
        assert "loop" in reasons["handbook/up"]
    for name in ("out.md", "dangling.xlsx", "loop-a"):
        with pytest.raises(DocumentGone):
            fs.fetch(f"docs:handbook/{name}")


def test_fifos_and_other_special_files_are_skipped_not_opened(tmp_path):
    root = make_tree(tmp_path / "root")
    os.mkfifo(root / "handbook" / "pipe.md")  # opening it for reading would block the scan
    fs = connector(root)
    assert paths(fs) == ["handbook/welcome.md", "hr/salary-bands.xlsx"]
    assert skipped(fs) == {"handbook/pipe.md": "not a regular file"}


# -- a file swapped for a link after the scan --------------------------------------


@pytest.mark.parametrize("follow", [False, True])
def test_a_file_swapped_for_a_link_after_the_scan_is_not_read(tmp_path, follow):
    root = make_tree(tmp_path / "root")
    (root / LINK).write_text("Pay is reviewed every April.")
    fs = connector(root, follow_symlinks=follow)
    (batch,) = fs.changes(None)
    assert LINK in {d.path for d in batch.documents}
    (root / LINK).unlink()
    os.symlink("../hr/salary-bands.xlsx", root / LINK)
    with pytest.raises(ConnectorError) as info:  # DocumentGone when links are not followed
        fs.fetch(f"docs:{LINK}")
    assert isinstance(info.value, DocumentGone) != follow
    assert BANDS not in str(info.value)


def test_a_folder_swapped_for_a_link_after_the_scan_is_not_read(tmp_path):
    root = make_tree(tmp_path / "root")
    (root / "hr" / "welcome.md").write_text(BANDS)  # same name as the handbook file
    fs = connector(root)
    fs.changes(None)
    shutil.rmtree(root / "handbook")
    os.symlink("hr", root / "handbook")
    with pytest.raises(DocumentGone):
        fs.fetch("docs:handbook/welcome.md")


# -- follow_symlinks: true ---------------------------------------------------------


def test_a_followed_file_link_gets_the_stricter_acl_of_link_and_target(tree):
    fs = connector(tree, follow_symlinks=True)
    assert paths(fs) == [
        "handbook/pay-overview.xlsx",
        "handbook/welcome.md",
        "hr/salary-bands.xlsx",
    ]
    doc = next(d for d in fs.scan().documents if d.path == LINK)
    assert rule_paths(doc) == (LINK, "hr/salary-bands.xlsx")
    assert doc.doc_id == f"docs:{LINK}" and doc.uri.endswith("/hr/salary-bands.xlsx")
    acl = acl_of(fs, LINK)
    assert acl.permits(DANA)
    assert not acl.permits(SAM) and not acl.permits(MALLORY)
    assert fs.fetch(f"docs:{LINK}").content == BANDS.encode()


def test_a_followed_folder_link_governs_every_file_under_it(tree):
    os.symlink("../hr", tree / "handbook" / "hr-mirror")
    fs = connector(tree, follow_symlinks=True)
    mirrored = "handbook/hr-mirror/salary-bands.xlsx"
    assert mirrored in paths(fs)
    doc = next(d for d in fs.scan().documents if d.path == mirrored)
    assert rule_paths(doc) == (mirrored, "hr/salary-bands.xlsx")
    acl = acl_of(fs, mirrored)
    assert acl.permits(DANA) and not acl.permits(SAM) and not acl.permits(MALLORY)


def test_a_link_inside_a_linked_folder_carries_every_path_on_the_way(tmp_path):
    root = make_tree(tmp_path / "root")
    (root / "shared").mkdir()
    os.symlink("../hr/salary-bands.xlsx", root / "shared" / "bands.xlsx")
    os.symlink("../shared", root / "handbook" / "shared")
    fs = connector(root, follow_symlinks=True)
    doc = next(d for d in fs.scan().documents if d.path == "handbook/shared/bands.xlsx")
    assert rule_paths(doc) == (
        "handbook/shared/bands.xlsx",
        "shared/bands.xlsx",
        "hr/salary-bands.xlsx",
    )
    acl = acl_of(fs, "handbook/shared/bands.xlsx")
    assert acl.permits(DANA) and not acl.permits(SAM) and not acl.permits(MALLORY)


def test_a_link_from_a_restricted_folder_is_restricted_too(tmp_path):
    root = make_tree(tmp_path / "root")
    os.symlink("../handbook/welcome.md", root / "hr" / "welcome.md")
    fs = connector(root, follow_symlinks=True)
    acl = acl_of(fs, "hr/welcome.md")  # both paths' rules: hr and all-staff, mallory denied
    assert acl.permits(DANA) and not acl.permits(SAM) and not acl.permits(MALLORY)
    assert acl_of(fs, "handbook/welcome.md").permits(SAM)  # the target itself is unchanged


def test_include_must_hold_for_the_target_too(tree):
    fs = connector(tree, follow_symlinks=True, include=["handbook/**"])
    assert paths(fs) == ["handbook/welcome.md"]


def test_a_retargeted_link_changes_the_fingerprint(tree):
    bands = tree / "hr" / "salary-bands.xlsx"
    other = tree / "hr" / "other.xlsx"
    other.write_text(BANDS)  # same size and modification time as the first target
    os.utime(other, ns=(bands.stat().st_atime_ns, bands.stat().st_mtime_ns))
    fs = connector(tree, follow_symlinks=True)
    before = fs.fingerprint()
    (tree / LINK).unlink()
    os.symlink("../hr/other.xlsx", tree / LINK)
    assert fs.fingerprint() != before


def test_follow_symlinks_is_for_filesystem_sources_only():
    with pytest.raises(ValueError, match="follow_symlinks"):
        SourceConfig.model_validate(
            {"name": "b", "type": "s3", "s3": {"bucket": "bucket"}, "follow_symlinks": True}
        )


# -- end to end: the real stages and the index's permission filter --------------------


def ingest(config: SourceConfig, tmp_path: Path) -> EmbeddedIndex:
    store = StagingStore(tmp_path / "staging.sqlite")
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    index = EmbeddedIndex.open(tmp_path / "index", create=True, dimensions=DIM)
    encoder = CountingEncoder()
    scan_source(config, store, AclPolicy.from_config(config.acl))
    parse_pending(store, fake_parse)
    chunk_pending(store, fake_chunk)
    screen_pending(store, PiiConfig(), InjectionConfig())
    tag_pending(store)
    embed_pending(store, encoder, cache)
    write_pending(store, index, cache, encoder.model_id)
    index.refresh()
    return index


def found(index: EmbeddedIndex, principal: Principal) -> set[str]:
    hits = index.search_lexical("salary bands Rotterdam", principal, 50)
    return {h.chunk_id.split("#")[0] for h in hits}


@pytest.mark.parametrize("follow", [False, True])
def test_end_to_end_the_denied_and_all_staff_never_read_the_bands_through_the_link(
    tree, tmp_path, follow
):
    index = ingest(source(tree, follow_symlinks=follow), tmp_path)
    try:
        assert found(index, SAM) == set()
        assert found(index, MALLORY) == set()
        through_link = {f"docs:{LINK}"} if follow else set()
        assert found(index, DANA) == {"docs:hr/salary-bands.xlsx"} | through_link
    finally:
        index.close()


def test_end_to_end_the_parser_reads_the_target_listed_not_a_retargeted_link(tmp_path):
    root = make_tree(tmp_path / "root")
    (root / "handbook" / "pay.md").write_text("Pay is reviewed every April.")
    os.symlink("pay.md", root / "handbook" / "pay-link.md")
    config = source(root, follow_symlinks=True)
    store = StagingStore(tmp_path / "staging.sqlite")
    scan_source(config, store, AclPolicy.from_config(config.acl))
    (root / "handbook" / "pay-link.md").unlink()  # retargeted between scan and parse
    os.symlink("../hr/salary-bands.xlsx", root / "handbook" / "pay-link.md")
    read: dict[str, str] = {}

    def recording_parse(doc):
        assert not any(p.is_symlink() for p in (doc.local_path, *doc.local_path.parents))
        read[doc.path] = doc.local_path.read_text()
        return fake_parse(doc)

    parse_pending(store, recording_parse)
    # The parser is handed the target's real path, so the link is not resolved again.
    assert read["handbook/pay-link.md"] == "Pay is reviewed every April."


def test_the_demo_corpus_holds_no_links():
    from trove.demo import CORPUS_DIR

    # `trove demo` copies it with shutil.copytree, which would turn a link into a file.
    assert not [p for p in CORPUS_DIR.rglob("*") if p.is_symlink()]
