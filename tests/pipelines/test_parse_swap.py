"""A file (or a folder above it) swapped for a link between the scan and the parse is never read.

The filesystem connector scans without following links; the parse stage opens
the file again later in the run. Each test scans a real tree into a real staging
store, swaps something for a link to ``outside/`` (a folder the source does not
cover), then runs the real parse stage with a real worker pool: the document
must fail with ``changed_during_sync`` and the other file's text must be nowhere.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from connectors.models import FileIdentity
from core.acl_policy import AclPolicy
from pipelines.config import SourceConfig
from pipelines.errors import ParseError
from pipelines.local_file import open_checked, private_copy, read_checked
from pipelines.parse_worker import make_parse_fn
from pipelines.stages import parse_pending, scan_source, source_document_of
from pipelines.store import StagingStore

PUBLIC = "Welcome to Northwind. The canteen opens at eight."
SECRET = "Salary bands: L4 Rotterdam 95000 to 120000 euro."


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    (root / "handbook").mkdir(parents=True)
    (root / "handbook" / "welcome.txt").write_text(PUBLIC)
    (root / "handbook" / "other.txt").write_text("Another public page about parking.")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "welcome.txt").write_text(SECRET)  # same name: a folder swap finds it
    (outside / "salaries.txt").write_text(SECRET)
    return root, outside


def _scan(root: Path, tmp_path: Path) -> StagingStore:
    config = SourceConfig.model_validate(
        {"name": "docs", "path": str(root), "acl": {"default": {"allow_groups": ["staff"]}}}
    )
    store = StagingStore(tmp_path / "state" / "staging.db")
    scan_source(config, store, AclPolicy.from_config(config.acl))
    assert {row.path for row in store.pending("added")} == {
        "handbook/welcome.txt",
        "handbook/other.txt",
    }
    return store


def _parse(store: StagingStore) -> dict[str, object]:
    from pipelines.config import LimitsConfig

    with make_parse_fn(LimitsConfig(), workers=1) as parse:
        result = parse_pending(store, parse)
    texts = {doc_id: store.get_parsed(doc_id).text for doc_id in store.parsed_ids()}
    return {"result": result, "texts": texts}


def _assert_failed_closed(outcome: dict[str, object]) -> None:
    result = outcome["result"]
    failures = {f.path: f for f in result.failures}
    assert failures["handbook/welcome.txt"].reason_class == "changed_during_sync"
    assert "welcome.txt" in failures["handbook/welcome.txt"].reason
    texts = outcome["texts"]
    assert all(SECRET not in text for text in texts.values())
    assert any("parking" in text for text in texts.values())  # the rest of the batch parsed


def test_a_file_swapped_for_a_link_out_of_the_source_fails_closed(tmp_path):
    root, outside = _tree(tmp_path)
    store = _scan(root, tmp_path)
    target = root / "handbook" / "welcome.txt"
    target.unlink()
    os.symlink(outside / "salaries.txt", target)
    _assert_failed_closed(_parse(store))


def test_a_parent_folder_swapped_for_a_link_fails_closed(tmp_path):
    root, outside = _tree(tmp_path)
    store = _scan(root, tmp_path)
    # The folder moves away and a link to another folder takes its place: the path
    # handbook/welcome.txt now resolves to outside/welcome.txt (no link at the end).
    shutil.move(root / "handbook", tmp_path / "moved-away")
    os.symlink(outside, root / "handbook")
    (outside / "other.txt").write_text("Another public page about parking.")
    outcome = _parse(store)
    failures = {f.path: f.reason_class for f in outcome["result"].failures}
    assert failures["handbook/welcome.txt"] == "changed_during_sync"
    assert all(SECRET not in text for text in outcome["texts"].values())


def test_an_unchanged_file_still_parses_and_carries_its_identity(tmp_path):
    root, _ = _tree(tmp_path)
    store = _scan(root, tmp_path)
    (row,) = [r for r in store.pending("added") if r.path == "handbook/welcome.txt"]
    doc = source_document_of(row)
    st = os.stat(root / "handbook" / "welcome.txt")
    assert doc.identity == FileIdentity.of(st)
    outcome = _parse(store)
    assert outcome["result"].failures == []
    assert any(PUBLIC in text for text in outcome["texts"].values())


def test_a_file_rewritten_in_place_after_the_scan_is_not_parsed_as_the_old_version(tmp_path):
    root, _ = _tree(tmp_path)
    store = _scan(root, tmp_path)
    path = root / "handbook" / "welcome.txt"
    path.write_text(PUBLIC + " Now with more text.")
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the clock's resolution
    failures = {f.path: f.reason_class for f in _parse(store)["result"].failures}
    assert failures == {"handbook/welcome.txt": "changed_during_sync"}


def test_the_checked_readers_refuse_links_and_other_inodes(tmp_path):
    real = tmp_path / "a.txt"
    real.write_text("a")
    other = tmp_path / "b.txt"
    other.write_text("b")
    identity = FileIdentity.of(real.stat())
    assert read_checked(real, identity) == b"a"
    link = tmp_path / "link.txt"
    os.symlink(real, link)
    with pytest.raises(ParseError) as info:
        open_checked(link, None)  # even a link to the right file: never followed
    assert info.value.reason_class == "changed_during_sync"
    with pytest.raises(ParseError) as info:
        read_checked(other, identity)
    assert info.value.reason_class == "changed_during_sync"
    with private_copy(real, identity) as copy:
        assert copy.name == "a.txt" and copy.read_text() == "a" and copy != real
    assert not copy.exists()
    with pytest.raises(ParseError) as info, private_copy(real, identity, max_bytes=0):
        pass
    assert info.value.reason_class == "too_large"
