"""Incremental re-sync on a copy of the demo corpus, with the real parser, model and Dagster.

Edit one file, delete one, rename one, change one ACL rule; then one `trove ingest`
must do exactly the least work and leave the index right.
"""

from __future__ import annotations

import shutil

import pytest
import yaml

from core.acl import Principal
from pipelines.store import StagingStore
from retrieval.embedding.factory import get_embedder
from retrieval.index.factory import open_index
from retrieval.search import Searcher
from trove import demo
from trove.config import load_settings
from trove.ingest import run_ingest

pytestmark = pytest.mark.model

EDITED = "handbook/leave-policy.md"
DELETED = "handbook/remote-work.html"
RENAMED_FROM = "engineering/adr-0007-telemetry-event-bus.md"
RENAMED_TO = "engineering/adr-0007-renamed.md"
ALEX = Principal.of("alex", ["all-staff"])
SAM = Principal.of("sam", ["all-staff", "engineering"])


def chunk_texts(settings, doc_id: str) -> list[str]:
    index = open_index(settings.index)
    try:
        return [c.text for c in index.document_chunks(doc_id)]
    finally:
        index.close()


@pytest.fixture(scope="module")
def resynced(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fresh")
    config = demo.prepare(workdir)
    corpus = workdir / "corpus"
    for rel in (EDITED, DELETED, RENAMED_FROM):
        assert (corpus / rel).is_file(), f"demo corpus changed: {rel} is missing"
    first = run_ingest(config)["sources"]["demo"]
    settings = load_settings(config)
    before_edit = chunk_texts(settings, f"demo:{EDITED}")

    # 1. edit: replace one sentence in one paragraph, keep the rest
    text = (corpus / EDITED).read_text()
    assert "27 days of paid annual leave" in text
    (corpus / EDITED).write_text(
        text.replace("27 days of paid annual leave", "31 days of paid annual leave")
    )
    # 2. delete, 3. rename
    (corpus / DELETED).unlink()
    shutil.move(corpus / RENAMED_FROM, corpus / RENAMED_TO)
    # 4. an ACL rule change: the finance folder opens to all-staff
    raw = yaml.safe_load(config.read_text())
    rules = raw["sources"][0]["acl"]["rules"]
    for rule in rules:
        if rule["match"] == "finance/**":
            rule["allow_groups"] = ["finance", "all-staff"]
    config.write_text(yaml.safe_dump(raw))

    embedder = get_embedder(settings.embedding.model)
    encoded_before = embedder.texts_encoded
    second = run_ingest(config)["sources"]["demo"]
    encoded = embedder.texts_encoded - encoded_before
    after_edit = chunk_texts(settings, f"demo:{EDITED}")
    index = open_index(settings.index)
    yield {
        "first": first,
        "second": second,
        "encoded": encoded,
        "before_edit": before_edit,
        "after_edit": after_edit,
        "searcher": Searcher(index, embedder),
        "index": index,
        "settings": settings,
    }
    index.close()


def test_summary_counts_each_change_class(resynced):
    first, second = resynced["first"], resynced["second"]
    finance_docs = 2  # finance/** minus the board deck, which an earlier rule owns
    assert second["changed"] == 1
    assert second["deleted"] == 2  # the deleted file and the rename's old path
    assert second["added"] == 1  # the rename's new path
    assert second["acl_only"] == finance_docs
    assert second["unchanged"] == first["documents_seen"] - 1 - 1 - 1 - finance_docs
    assert second["documents_parsed"] == 2  # the edited and the renamed file only


def test_only_changed_chunk_text_is_embedded(resynced):
    before, after = set(resynced["before_edit"]), resynced["after_edit"]
    changed_chunks = [t for t in after if t not in before]
    assert len(changed_chunks) >= 1
    # Every embedding call is accounted for by a chunk whose text changed; the
    # renamed document and the ACL-only documents cost nothing.
    assert resynced["second"]["chunks_embedded"] == len(changed_chunks)
    assert resynced["encoded"] == len(changed_chunks)


def test_edited_text_is_found_and_old_text_is_not(resynced):
    passages = resynced["searcher"].search("how many days of paid annual leave", ALEX, k=5)
    texts = " ".join(p.text for p in passages)
    assert "31 days of paid annual leave" in texts
    index = resynced["index"]
    all_text = " ".join(c.text for c in index.document_chunks(f"demo:{EDITED}"))
    assert "27 days of paid annual leave" not in all_text


def test_deleted_and_renamed_documents(resynced):
    index = resynced["index"]
    ids = index.doc_ids()
    assert f"demo:{DELETED}" not in ids
    assert f"demo:{RENAMED_FROM}" not in ids
    assert f"demo:{RENAMED_TO}" in ids
    for p in resynced["searcher"].search("remote work from home policy", ALEX, k=20):
        assert p.citation.path != DELETED


def test_acl_rule_change_takes_effect_for_affected_principals(resynced):
    passages = resynced["searcher"].search("vendor payment terms", ALEX, k=10)
    assert any(p.citation.path.startswith("finance/") for p in passages)
    # and nothing else opened up
    for p in resynced["searcher"].search("salary bands pay range", ALEX, k=30):
        assert not p.citation.path.startswith("hr/")


def test_manifest_and_index_agree_after_resync(resynced):
    settings = resynced["settings"]
    store = StagingStore.for_source(settings.state.path, "demo")
    try:
        expected = {cid for e in store.manifest().values() for cid in e.chunk_ids}
    finally:
        store.close()
    assert set(resynced["index"].all_acls()) == expected


def test_status_shows_pending_changes_failures_and_staleness(resynced, tmp_path):
    import json

    from typer.testing import CliRunner

    from trove.cli import app

    settings = resynced["settings"]
    corpus = settings.sources[0].path
    (corpus / "handbook" / "new-policy.md").write_text("# Parking\n\nParking is free.")
    (corpus / "handbook" / "broken.pdf").write_bytes(b"not a pdf at all")
    config = tmp_path / "trove.yaml"
    raw = settings.model_dump(mode="json", exclude_none=True)
    raw["sources"][0]["freshness_sla"] = 1  # one second: stale by the time we look
    config.write_text(yaml.safe_dump(raw))
    import time

    time.sleep(1.1)
    result = CliRunner().invoke(app, ["status", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    demo_status = json.loads(result.stdout)["sources"]["demo"]
    assert demo_status["pending"]["added"] == 2
    assert demo_status["pending"]["changed"] == 0
    assert demo_status["documents"] == resynced["index"].stats().documents
    assert demo_status["freshness"]["state"] == "stale"
    assert demo_status["last_sync"] is not None
    index_status = json.loads(result.stdout)["index"]
    assert index_status["ready"] and index_status["chunks"] == resynced["index"].stats().chunks
