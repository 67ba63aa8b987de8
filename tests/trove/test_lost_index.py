"""A lost, moved or restored index is found out and rebuilt by the next `trove ingest`.

The index is derived data. Before, deleting the index folder (or pointing
``index.path`` elsewhere, or putting an older copy back) while the state folder
survived made every later ingest report everything unchanged, write nothing,
and leave searches empty or stale; `trove status` showed the manifest's chunks
beside an index of 0 as if both were fine. Now the ingest compares the index
with the manifest first and rewrites what it lacks from the state folder's copy
and the embedding cache (nothing parsed, nothing embedded), removes what the
manifest does not vouch for, and says so in its summary; `trove status` and
the `index_matches_manifest` check report the disagreement as an error.

Every scenario runs the real `trove ingest` path (Dagster in-process, the
parser, the embedded index) with a counting hash embedder.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml
from typer.testing import CliRunner

from assets.checks import index_matches_manifest, source_acls
from core.acl import Principal
from pipelines.store import StagingStore
from retrieval.index.embedded import EmbeddedIndex
from retrieval.index.factory import open_index
from tests.trove.ingest_fakes import DIM, CountingEmbedder, use_embedder
from trove.cli import app
from trove.config import Settings, load_settings
from trove.ingest import IngestError, run_ingest
from trove.status import status

SOURCE = "notes"
STAFF = Principal.of("sam", ["staff"])
HR = Principal.of("dana", ["staff", "hr"])
PAYROLL = Principal.of("pat", ["staff", "payroll"])
DOCS = {
    "handbook/travel.md": "# Travel\n\nPer diem covers pelican sightings on business trips.\n",
    "handbook/laptops.md": "# Laptops\n\nEvery starter receives a laptop with disk encryption.\n",
    "handbook/holidays.md": "# Holidays\n\nThe office closes for the winter solstice festival.\n",
    "hr/salaries.md": "# Salaries\n\nSalary bands are reviewed every March by the board.\n",
}
RULES = [{"match": "hr/**", "allow_groups": ["hr"]}]


def write_config(root: Path, *, rules=RULES, index_path: str = "index") -> Path:
    config = {
        "index": {"path": index_path},
        "state": {"path": "state"},
        "sources": [
            {
                "name": SOURCE,
                "path": "docs",
                "acl": {"default": {"allow_groups": ["staff"]}, "rules": rules},
            }
        ],
    }
    path = root / "trove.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Workspace:
    root: Path
    config: Path

    def settings(self) -> Settings:
        return load_settings(self.config)

    def index(self):
        return open_index(self.settings().index)

    def store(self) -> StagingStore:
        return StagingStore.for_source(self.settings().state.path, SOURCE)

    def manifest_chunks(self) -> int:
        store = self.store()
        try:
            return sum(len(e.chunk_ids) for e in store.manifest().values())
        finally:
            store.close()

    def found(self, query: str, principal: Principal) -> set[str]:
        index = self.index()
        try:
            return {h.chunk_id.split("#")[0] for h in index.search_lexical(query, principal, k=20)}
        finally:
            index.close()

    def ingest(self) -> dict:
        return run_ingest(self.config)["sources"][SOURCE]


@pytest.fixture(scope="module")
def embedder() -> CountingEmbedder:
    return CountingEmbedder()


@pytest.fixture(autouse=True)
def _fast_embedder(monkeypatch, embedder):
    use_embedder(monkeypatch, embedder)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, embedder) -> Path:
    """A folder with a corpus, a config, an index and a state folder after one ingest."""
    root = tmp_path_factory.mktemp("baseline")
    for rel, text in DOCS.items():
        (root / "docs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "docs" / rel).write_text(text)
    config = write_config(root)
    with pytest.MonkeyPatch.context() as mp:
        use_embedder(mp, embedder)
        summary = run_ingest(config)["sources"][SOURCE]
    assert summary["added"] == len(DOCS) and summary["documents_failed"] == []
    return root


@pytest.fixture
def ws(baseline, tmp_path) -> Workspace:
    root = tmp_path / "ws"
    shutil.copytree(baseline, root)
    return Workspace(root, root / "trove.yaml")


def assert_vectors_are_the_embedded_ones(ws: Workspace, embedder: CountingEmbedder) -> None:
    """Every chunk is its own nearest neighbour for the vector of the text it was embedded from."""
    from pipelines.stages import embedding_text

    store, index = ws.store(), ws.index()
    try:
        checked = 0
        for doc_id in index.doc_ids():
            for record, context in store.indexed_chunks(doc_id):
                vector = embedder.encode_query(embedding_text(record, context))
                top = index.search_dense(vector, Principal.of("x", ["staff", "hr", "payroll"]), 1)
                assert top[0].chunk_id == record.chunk_id
                assert top[0].score == pytest.approx(1.0, abs=1e-5)
                checked += 1
        assert checked == index.stats().chunks > 0
    finally:
        store.close()
        index.close()


def test_a_deleted_index_folder_is_rebuilt_without_parsing_or_embedding(ws, embedder):
    chunks = ws.manifest_chunks()
    shutil.rmtree(ws.root / "index")

    before = status(ws.settings())
    agreement = before["sources"][SOURCE]["index"]
    assert before["ok"] is False
    assert (agreement["manifest_chunks"], agreement["index_chunks"]) == (chunks, 0)
    assert agreement["missing_documents"] == len(DOCS)
    assert "the index is missing" in agreement["error"]
    assert before["problems"] == [
        {"source": SOURCE, "error": agreement["error"], "fix": "trove ingest"}
    ]

    encoded = embedder.texts_encoded
    summary = ws.ingest()
    assert summary["rebuilt"] == len(DOCS)
    assert summary["index_repair"]["rewritten_from_state"] == len(DOCS)
    assert "was " in summary["index_repair"]["reason"]
    assert "the index is missing" in summary["index_repair"]["reason"]
    assert summary["documents_parsed"] == 0 and summary["chunks_embedded"] == 0
    assert embedder.texts_encoded == encoded

    assert ws.found("pelican", STAFF) == {"notes:handbook/travel.md"}
    assert ws.found("salary bands", HR) == {"notes:hr/salaries.md"}
    assert ws.found("salary bands", STAFF) == set()  # the ACL came back with the text
    assert_vectors_are_the_embedded_ones(ws, embedder)
    after = status(ws.settings())
    assert after["ok"] is True and after["problems"] == []
    assert after["sources"][SOURCE]["index"]["index_chunks"] == chunks

    again = ws.ingest()
    assert again["rebuilt"] == 0 and again["index_repair"] is None
    assert again["unchanged"] == len(DOCS)


def test_index_path_moved_is_an_error_in_status_and_the_check_until_ingest_rebuilds(ws):
    chunks = ws.manifest_chunks()
    config = write_config(ws.root, index_path="elsewhere")
    runner = CliRunner()
    reported = runner.invoke(app, ["status", "--json", "--config", str(config)])
    assert reported.exit_code == 1, reported.output
    problems = json.loads(reported.stdout)["problems"]
    assert [p["fix"] for p in problems] == ["trove ingest"]
    text = runner.invoke(app, ["status", "--config", str(config)])
    flat = " ".join(text.stdout.split())
    assert text.exit_code == 1 and "ERROR notes:" in flat and "Fix: trove ingest" in flat

    # What the search_index step would find there: the empty index it creates.
    index = EmbeddedIndex.open(ws.root / "elsewhere", create=True, dimensions=DIM)
    store = ws.store()
    try:
        check = index_matches_manifest(source_acls(index, SOURCE), store, index, SOURCE)
    finally:
        store.close()
        index.close()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["chunks_expected"].value == chunks
    assert check.metadata["chunks_in_index"].value == 0
    assert check.metadata["missing_documents"].value == len(DOCS)
    assert check.metadata["manifest_generation"].value != check.metadata["index_generation"].value
    assert "trove ingest" in check.description

    summary = ws.ingest()
    assert summary["rebuilt"] == len(DOCS) and summary["chunks_embedded"] == 0
    assert "replaced by another one" in summary["index_repair"]["reason"]
    assert ws.found("encryption", STAFF) == {"notes:handbook/laptops.md"}
    index, store = ws.index(), ws.store()
    try:
        check = index_matches_manifest(source_acls(index, SOURCE), store, index, SOURCE)
    finally:
        store.close()
        index.close()
    assert check.passed and check.metadata["chunks_in_index"].value == chunks
    assert runner.invoke(app, ["status", "--json", "--config", str(config)]).exit_code == 0


def test_an_older_copy_of_the_index_put_back_is_brought_up_to_date(ws, embedder):
    shutil.copytree(ws.root / "index", ws.root / "index-old")
    docs = ws.root / "docs"
    (docs / "handbook/bikes.md").write_text("# Bikes\n\nThe cycle scheme pays for a tandem.\n")
    (docs / "handbook/laptops.md").write_text(
        "# Laptops\n\nEvery starter receives a laptop with a privacy screen.\n"
    )
    (docs / "handbook/holidays.md").unlink()
    write_config(ws.root, rules=[{"match": "hr/**", "allow_groups": ["payroll"]}])
    newer = ws.ingest()
    assert (newer["added"], newer["changed"], newer["deleted"], newer["acl_only"]) == (1, 1, 1, 1)
    chunks = ws.manifest_chunks()
    shutil.rmtree(ws.root / "index")
    shutil.copytree(ws.root / "index-old", ws.root / "index")
    # The stale copy serves the old world until the next ingest.
    assert ws.found("solstice", STAFF) == {"notes:handbook/holidays.md"}

    agreement = status(ws.settings())["sources"][SOURCE]["index"]
    assert agreement["ok"] is False and "the index is an older copy" in agreement["error"]
    assert (agreement["missing_documents"], agreement["stale_documents"]) == (1, 2)
    assert agreement["orphaned_documents"] == 1

    encoded = embedder.texts_encoded
    summary = ws.ingest()
    assert summary["rebuilt"] == 3 and summary["index_repair"]["orphans_removed"] == 1
    assert summary["documents_parsed"] == 0 and embedder.texts_encoded == encoded
    assert ws.found("tandem", STAFF) == {"notes:handbook/bikes.md"}
    assert ws.found("privacy screen", STAFF) == {"notes:handbook/laptops.md"}
    assert ws.found("encryption", STAFF) == set()
    assert ws.found("solstice", STAFF) == set()  # deleted at the source: gone again
    assert ws.found("salary bands", HR) == set()  # the ACL in force now, not the copy's
    assert ws.found("salary bands", PAYROLL) == {"notes:hr/salaries.md"}
    after = status(ws.settings())
    assert after["ok"] is True
    assert after["sources"][SOURCE]["index"]["index_chunks"] == chunks


def test_a_lost_state_folder_neither_duplicates_chunks_nor_keeps_deleted_documents(ws):
    shutil.rmtree(ws.root / "state")
    (ws.root / "docs" / "handbook/holidays.md").unlink()  # deleted while the state was lost
    summary = ws.ingest()
    assert summary["added"] == len(DOCS) - 1
    assert summary["index_repair"]["orphans_removed"] == len(DOCS)
    assert summary["chunks_embedded"] > 0  # the embedding cache went with the state
    assert ws.found("solstice", STAFF) == set()
    index = ws.index()
    try:
        acls = index.all_acls()
        assert len(acls) == index.stats().chunks == ws.manifest_chunks()
        assert index.doc_ids() == {f"{SOURCE}:{p}" for p in DOCS} - {"notes:handbook/holidays.md"}
        for doc_id in index.doc_ids():
            ords = [c.ord for c in index.document_chunks(doc_id)]
            assert ords == list(range(len(ords)))
    finally:
        index.close()
    assert status(ws.settings())["ok"] is True


def test_without_a_kept_copy_the_lost_documents_are_parsed_again_but_not_embedded(ws, embedder):
    staging = ws.root / "state" / "sources" / SOURCE / "staging.sqlite"
    with sqlite3.connect(staging) as conn:  # a state folder from before the copy was kept
        conn.execute("DELETE FROM indexed_chunks")
        conn.execute("UPDATE manifest SET acl = NULL")
    conn.close()
    shutil.rmtree(ws.root / "index")
    encoded = embedder.texts_encoded
    summary = ws.ingest()
    assert summary["rebuilt"] == len(DOCS)
    assert summary["index_repair"]["refetched"] == len(DOCS)
    assert summary["documents_parsed"] == len(DOCS) and summary["chunks_embedded"] == 0
    assert embedder.texts_encoded == encoded
    assert ws.found("pelican", STAFF) == {"notes:handbook/travel.md"}
    store = ws.store()
    try:
        assert set(store.indexed_chunk_ids()) == {f"{SOURCE}:{p}" for p in DOCS}
    finally:
        store.close()


def test_index_and_embedding_cache_both_lost_is_only_slower(ws, embedder):
    chunks = ws.manifest_chunks()
    shutil.rmtree(ws.root / "index")
    for cache in (ws.root / "state").glob("embedding-cache.sqlite*"):
        cache.unlink()
    encoded = embedder.texts_encoded
    summary = ws.ingest()
    assert summary["rebuilt"] == len(DOCS) and summary["documents_parsed"] == 0
    assert summary["chunks_embedded"] == chunks == embedder.texts_encoded - encoded
    assert_vectors_are_the_embedded_ones(ws, embedder)


def test_a_rebuild_cut_short_leaves_the_last_index_serving_and_the_next_run_finishes(
    ws, monkeypatch
):
    shutil.copytree(ws.root / "index", ws.root / "index-old")
    (ws.root / "docs" / "handbook/bikes.md").write_text("# Bikes\n\nA tandem scheme.\n")
    ws.ingest()
    shutil.rmtree(ws.root / "index")
    shutil.copytree(ws.root / "index-old", ws.root / "index")

    def killed(self, batch):
        raise dg.Failure("killed during the rebuild", allow_retries=False)

    with monkeypatch.context() as mp:
        mp.setattr(EmbeddedIndex, "apply", killed)
        with pytest.raises(IngestError, match="killed during the rebuild"):
            ws.ingest()
    # The copy that was there keeps serving, whole.
    assert ws.found("pelican", STAFF) == {"notes:handbook/travel.md"}
    assert ws.found("tandem", STAFF) == set()

    def lost_before_the_manifest(self, conn, summary):
        raise dg.Failure("killed after the index commit", allow_retries=False)

    with monkeypatch.context() as mp:
        mp.setattr(StagingStore, "add_run", lost_before_the_manifest)
        with pytest.raises(IngestError, match="after the index commit"):
            ws.ingest()
    assert ws.found("tandem", STAFF) == {"notes:handbook/bikes.md"}

    # The index holds everything now; the generation was never recorded, so the next
    # run compares document by document, finds nothing to do, and records it.
    summary = ws.ingest()
    assert summary["rebuilt"] == 0 and summary["chunks_written"] == 0
    assert status(ws.settings())["ok"] is True
    index = ws.index()
    try:
        assert len(index.all_acls()) == ws.manifest_chunks()
    finally:
        index.close()


def test_the_embedded_manifest_names_its_index_and_each_commit(ws):
    index = ws.index()
    try:
        generation = index.index_generation()
    finally:
        index.close()
    store = ws.store()
    try:
        assert store.index_generation() == generation
    finally:
        store.close()
    current = (ws.root / "index" / "CURRENT").read_text().strip()
    manifest = json.loads((ws.root / "index" / f"manifest-{int(current):010d}.json").read_text())
    assert (manifest["index_id"], manifest["generation"], manifest["commit"]) == (
        generation.index_id,
        generation.sequence,
        generation.commit,
    )
    assert len(manifest["index_id"]) == len(manifest["commit"]) == 16


def test_an_unreadable_index_is_an_error_with_its_fix_and_is_rebuilt_once_moved_aside(ws):
    (segment,) = (ws.root / "index" / "segments").iterdir()
    meta = segment / "meta.bin"
    meta.write_bytes(meta.read_bytes()[:10])  # a half-written file
    report = status(ws.settings())
    assert report["ok"] is False
    assert "unreadable" in report["problems"][0]["error"]
    assert "move the index folder aside" in report["problems"][0]["fix"]
    with pytest.raises(IngestError, match="move the index folder aside"):
        ws.ingest()
    (ws.root / "index").rename(ws.root / "index-broken")
    summary = ws.ingest()
    assert summary["rebuilt"] == len(DOCS) and summary["chunks_embedded"] == 0
    assert ws.found("pelican", STAFF) == {"notes:handbook/travel.md"}


def test_an_unreadable_staging_store_is_an_error_and_moving_it_aside_reindexes(ws):
    staging = ws.root / "state" / "sources" / SOURCE / "staging.sqlite"
    for path in staging.parent.glob("staging.sqlite*"):
        path.unlink()
    staging.write_bytes(b"not a database " * 300)
    report = status(ws.settings())
    assert report["ok"] is False
    assert "unreadable" in report["problems"][0]["error"]
    assert "staging store aside" in report["problems"][0]["fix"]
    result = CliRunner().invoke(app, ["status", "--config", str(ws.config)])
    assert result.exit_code == 1 and "ERROR" in result.stdout
    with pytest.raises(IngestError, match=r"staging store .* is unreadable"):
        ws.ingest()  # at once, with the reason: no step retries
    staging.rename(staging.with_name("staging.sqlite.broken"))
    summary = ws.ingest()
    assert summary["added"] == len(DOCS) and summary["index_repair"]["orphans_removed"] == len(DOCS)
    assert status(ws.settings())["ok"] is True
