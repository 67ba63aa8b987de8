"""Each file of ../shared/corpora/formats yields located chunks or a recorded failure."""

from __future__ import annotations

import pytest
import yaml

from retrieval.index.factory import open_index
from trove.config import load_settings
from trove.ingest import run_ingest

pytestmark = [pytest.mark.model, pytest.mark.corpus]


def test_each_format_file_is_chunked_with_location_or_failed_with_reason(shared_corpora, tmp_path):
    formats = shared_corpora / "formats"
    files = sorted(
        p.relative_to(formats).as_posix()
        for p in formats.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )
    config = tmp_path / "trove.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "index": {"path": str(tmp_path / "index")},
                "state": {"path": str(tmp_path / "state")},
                "sources": [
                    {
                        "name": "formats",
                        "path": str(formats),
                        "acl": {"default": {"allow_groups": ["all-staff"]}},
                    }
                ],
            }
        )
    )
    summary = run_ingest(config)["sources"]["formats"]
    assert summary["documents_seen"] == len(files)
    failed = {f["path"]: f["reason"] for f in summary["documents_failed"]}
    for reason in failed.values():
        assert reason.strip()
    index = open_index(load_settings(config).index)
    try:
        for path in files:
            if path in failed:
                continue
            chunks = index.document_chunks(f"formats:{path}")
            assert chunks, f"{path}: neither chunks nor a recorded failure"
            assert any(c.pages or c.section for c in chunks), f"{path}: no page or section"
    finally:
        index.close()
    assert "empty.txt" in failed
    # Most of the corpus is well-formed: failures are the exception, not the rule.
    assert len(failed) <= len(files) // 4, failed
