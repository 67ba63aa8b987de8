"""OpenSearch backend operations on the real node (each test under its own index
prefix): index lifecycle, ids, bulk item errors, ACL-only updates, blue/green
rebuild, readiness, status and the CLI. osmem-server (the emulator) is kept for the
one thing the 2.19 node cannot show: a cluster that reports 3.x."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from core.acl import Acl, Principal
from pipelines.store import StagingStore
from retrieval.index.base import IndexBackendError, IndexNotFoundError, WriteBatch
from retrieval.index.config import IndexConfig
from retrieval.index.factory import open_index
from retrieval.index.opensearch.bulk import BulkAction, BulkWriter
from retrieval.index.opensearch.client import build_client, check_ready
from retrieval.index.opensearch.documents import HASHED_ID_PREFIX, os_id
from retrieval.index.opensearch.errors import OpenSearchUnavailableError, RebuildError
from retrieval.index.opensearch.index import OpenSearchIndex
from retrieval.index.opensearch.lifecycle import IndexLayout, alias_targets, rebuild
from tests.retrieval.builders import DIM, doc_records
from trove.cli import app
from trove.commands.index import expected_chunks_by_source, status_of
from trove.config import Settings

pytestmark = pytest.mark.opensearch

STAFF = Acl(allow_groups=frozenset({"staff"}))
ALICE = Principal.of("alice", ["staff"])


def config_for(node: tuple[str, str], **kw) -> IndexConfig:
    url, prefix = node
    return IndexConfig(
        backend="opensearch", hosts=[url], index_prefix=prefix, number_of_replicas=0, **kw
    )


@pytest.fixture
def node(opensearch_prefix) -> tuple[str, str]:
    """``(url, prefix)``: the real node and this test's own index prefix."""
    return opensearch_prefix


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(5)


@pytest.fixture
def index(node):
    ix = OpenSearchIndex.open(config_for(node), create=True, dimensions=DIM)
    yield ix
    ix.close()


def load(index: OpenSearchIndex, rng, sources=("hr", "eng"), per_source: int = 3) -> int:
    records = []
    for s in sources:
        for i in range(per_source):
            records += doc_records(f"{s}:doc{i}", ["travel policy", "hotel"], STAFF, rng, source=s)
    index.apply(WriteBatch(upserts=records))
    return len(records)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- lifecycle


def test_open_without_an_index_says_to_ingest(node):
    with pytest.raises(IndexNotFoundError, match=rf"{node[1]}-chunks.*trove ingest"):
        OpenSearchIndex.open(config_for(node))


def test_versioned_index_behind_an_alias_with_the_app_mapping(index, node):
    assert alias_targets(index.client, index.alias) == [f"{index.alias}-v0001"]
    assert index.physical_index() == f"{index.alias}-v0001"
    mapping = index.client.indices.get_mapping(index=f"{index.alias}-v0001")
    props = mapping[f"{index.alias}-v0001"]["mappings"]["properties"]
    assert props["embedding"]["dimension"] == DIM
    assert props["chunk_text"]["analyzer"] == "trove_text"  # the embedded index's analysis
    settings = index.client.indices.get_settings(index=f"{index.alias}-v0001")
    assert settings[f"{index.alias}-v0001"]["settings"]["index"]["knn"] == "true"
    with pytest.raises(IndexBackendError, match="16-dimensional vectors, the caller uses 17"):
        OpenSearchIndex.open(config_for(node), dimensions=DIM + 1)
    # The factory picks this backend from the config.
    reopened = open_index(config_for(node))
    assert isinstance(reopened, OpenSearchIndex) and reopened.stats().dimensions == DIM


def test_index_created_at_first_upsert_when_dimensions_unknown(node, rng):
    ix = OpenSearchIndex.open(config_for(node), create=True)
    assert ix.physical_index() is None and ix.search_lexical("x", ALICE, 3) == []
    ix.apply(WriteBatch(delete_docs={"nothing-yet"}))  # nothing stored: nothing to do
    assert ix.physical_index() is None
    ix.apply(WriteBatch(upserts=doc_records("d1", ["travel"], STAFF, rng)))
    assert ix.physical_index() == f"{ix.alias}-v0001"
    assert ix.stats().dimensions == DIM


def test_long_chunk_ids_get_a_hashed_id_and_keep_their_own(index, rng):
    doc = "share:" + "x" * 600
    index.apply(WriteBatch(upserts=doc_records(doc, ["travel"], STAFF, rng)))
    chunk_id = f"{doc}#0"
    stored = index.client.get(index=index.alias, id=os_id(chunk_id))
    assert stored["_id"].startswith(HASHED_ID_PREFIX)
    assert stored["_source"]["chunk_id"] == chunk_id
    assert [h.chunk_id for h in index.search_lexical("travel", ALICE, 3)] == [chunk_id]


def test_acl_only_update_rewrites_acl_fields_and_keeps_the_vector(index, rng):
    records = doc_records("d1", ["travel"], STAFF, rng)
    index.apply(WriteBatch(upserts=records))
    before = index.client.get(index=index.alias, id="d1#0")["_source"]
    new_acl = Acl(allow_users=frozenset({"bob"}), tenant="t9")
    index.apply(WriteBatch(acl_updates={"d1": new_acl}))
    after = index.client.get(index=index.alias, id="d1#0")["_source"]
    assert after["embedding"] == before["embedding"]
    np.testing.assert_allclose(after["embedding"], records[0].vector, rtol=1e-6)
    assert (after["acl_allow_users"], after["tenant_id"]) == (["bob"], "t9")
    assert after["acl_fingerprint"] == new_acl.fingerprint()
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed <= {"acl_allow_users", "acl_allow_groups", "tenant_id", "acl_fingerprint"}


def test_bulk_item_errors_are_counted_not_hidden(index):
    writer = BulkWriter(index.client)
    report = writer.write(
        [
            BulkAction.index_doc(index.alias, "ok", {"chunk_id": "ok", "doc_id": "d"}),
            BulkAction.index_doc(index.alias, "bad", {"chunk_id": "bad", "bogus": 1}),
        ]
    )
    assert report.succeeded == 1
    assert [(f.id, f.status, f.error_type) for f in report.failures] == [
        ("bad", 400, "strict_dynamic_mapping_exception")
    ]


def test_stats(index, rng):
    n = load(index, rng)
    stats = index.stats()
    assert (stats.chunks, stats.documents, stats.dimensions, stats.generation) == (n, 6, DIM, 1)
    assert stats.size_bytes > 0


# ---------------------------------------------------------------- blue/green rebuild


def test_rebuild_swaps_the_alias_to_a_validated_copy(index, rng):
    n = load(index, rng)
    before = index.get_chunks(["hr:doc0#0", "eng:doc2#1"])
    old_vector = index.client.get(index=index.alias, id="hr:doc0#0")["_source"]["embedding"]
    report = rebuild(index.client, index.layout, expected_by_source={"hr": n // 2, "eng": n // 2})
    assert (report.old_index, report.new_index, report.chunks) == (
        f"{index.alias}-v0001",
        f"{index.alias}-v0002",
        n,
    )
    assert alias_targets(index.client, index.alias) == [f"{index.alias}-v0002"]
    assert not index.client.indices.exists(index=f"{index.alias}-v0001")
    v2 = f"{index.alias}-v0002"
    settings = index.client.indices.get_settings(index=v2)[v2]
    assert settings["settings"]["index"]["refresh_interval"] == "1s"  # restored
    # Same chunks, same vectors (copied, not re-embedded), same answers.
    assert index.get_chunks(["hr:doc0#0", "eng:doc2#1"]) == before
    new_vector = index.client.get(index=index.alias, id="hr:doc0#0")["_source"]["embedding"]
    assert new_vector == old_vector
    assert len(index.search_lexical("travel", ALICE, 100)) == n // 2
    assert index.stats().generation == 2
    index.apply(WriteBatch(delete_docs={"hr:doc0"}))  # writes go to the new index
    assert index.stats().chunks == n - 2


def test_rebuild_refuses_counts_that_disagree_with_the_manifest(index, rng):
    n = load(index, rng)
    with pytest.raises(RebuildError, match=r"disagree with the manifest.*hr"):
        rebuild(index.client, index.layout, expected_by_source={"hr": n // 2 + 1, "eng": n // 2})
    assert alias_targets(index.client, index.alias) == [f"{index.alias}-v0001"]
    assert not index.client.indices.exists(index=f"{index.alias}-v0002")
    assert index.stats().chunks == n


def test_rebuild_refuses_chunks_without_stored_vectors(index, rng):
    load(index, rng)
    source = index.client.get(index=index.alias, id="hr:doc0#0")["_source"]
    del source["embedding"]
    index.client.index(index=index.alias, id="hr:doc0#0", body=source, refresh=True)
    with pytest.raises(RebuildError, match="no stored vector"):
        rebuild(index.client, index.layout)
    assert alias_targets(index.client, index.alias) == [f"{index.alias}-v0001"]
    assert not index.client.indices.exists(index=f"{index.alias}-v0002")


def test_rebuild_needs_an_index():
    layout = IndexLayout(prefix="none")

    class NoAlias:
        class indices:  # mimics client.indices
            @staticmethod
            def get_alias(name):
                from opensearchpy.exceptions import NotFoundError

                raise NotFoundError(404, "index_not_found_exception", {})

    with pytest.raises(RebuildError, match="no index"):
        rebuild(NoAlias(), layout)  # type: ignore[arg-type]


# ---------------------------------------------------------------- readiness and status


def test_unreachable_cluster_has_a_clear_message():
    url = f"http://127.0.0.1:{free_port()}"
    client = build_client(IndexConfig(backend="opensearch", hosts=[url], timeout_s=2))
    client.transport.max_retries = 0
    with pytest.raises(OpenSearchUnavailableError, match=rf"cannot reach OpenSearch at {url}"):
        check_ready(client, [url])


def test_osmem_reports_3x(osmem_url):
    cluster = check_ready(build_client(config_for((osmem_url, "ops"))), [osmem_url])
    assert cluster.version >= (3, 0) and cluster.supports_hybrid_filter


def write_config(tmp_path: Path, index_cfg: dict, sources: list | None = None) -> Path:
    path = tmp_path / "trove.yaml"
    data = {
        "index": index_cfg,
        "state": {"path": str(tmp_path / "state")},
        "sources": sources or [],
    }
    path.write_text(yaml.safe_dump(data))
    return path


def settings_for(node: tuple[str, str], tmp_path: Path) -> Settings:
    return Settings(
        index=config_for(node),
        state={"path": tmp_path / "state"},
        sources=[{"name": "hr", "path": tmp_path}, {"name": "eng", "path": tmp_path}],
    )


def test_status_of_opensearch(node, index, rng, tmp_path):
    n = load(index, rng)
    status = status_of(settings_for(node, tmp_path))
    assert status["ready"] is True and status["error"] is None
    assert (status["backend"], status["alias"], status["physical_index"]) == (
        "opensearch",
        index.alias,
        f"{index.alias}-v0001",
    )
    assert (status["chunks"], status["documents"], status["generation"]) == (n, 6, 1)
    version = ".".join(map(str, index.cluster.version[:2]))
    assert status["version"].startswith(version)
    assert status["hybrid_filter"] is index.cluster.supports_hybrid_filter


def test_status_of_unreachable_and_missing(tmp_path, node):
    url = f"http://127.0.0.1:{free_port()}"
    down = status_of(Settings(index=IndexConfig(backend="opensearch", hosts=[url], timeout_s=1)))
    assert down["ready"] is False and "cannot reach OpenSearch" in down["error"]
    missing = status_of(settings_for(node, tmp_path))
    assert missing["ready"] is False and "trove ingest" in missing["error"]
    embedded = status_of(Settings(index=IndexConfig(path=tmp_path / "none")))
    assert embedded["backend"] == "embedded" and embedded["ready"] is False


def test_expected_counts_come_from_the_manifest(tmp_path):
    settings = settings_for(("http://unused:9200", "ops"), tmp_path)
    store = StagingStore.for_source(settings.state.path, "hr")
    with store.transaction() as conn:
        store.record_indexed(conn, "hr:a", "a.md", "v1", "fp", ["hr:a#0", "hr:a#1"])
        store.record_indexed(conn, "hr:b", "b.md", "v1", "fp", ["hr:b#0"])
    store.close()
    assert expected_chunks_by_source(settings) == {"hr": 3, "eng": 0}


def test_cli_rebuild(tmp_path, node, index, rng):
    load(index, rng, sources=("hr",), per_source=2)
    runner = CliRunner()
    sources = [{"name": "hr", "path": str(tmp_path)}]
    config = write_config(tmp_path, config_for(node).model_dump(mode="json"), sources)
    # The manifest is empty (nothing ingested through the pipeline): validation refuses.
    refused = runner.invoke(app, ["index", "rebuild", "--config", str(config)])
    assert refused.exit_code == 1 and "disagree with the manifest" in refused.output
    done = runner.invoke(app, ["index", "rebuild", "--no-validate", "--config", str(config)])
    assert done.exit_code == 0, done.output
    # The refused copy was deleted: the next one is v0002 again.
    assert f"{index.alias}-v0001 -> {index.alias}-v0002" in done.output
    status = runner.invoke(app, ["index", "check", "--config", str(config)])
    assert status.exit_code == 0 and "4 chunks" in status.output


def test_cli_rebuild_on_embedded_is_not_needed(tmp_path):
    config = write_config(tmp_path, {"backend": "embedded", "path": str(tmp_path / "ix")})
    result = CliRunner().invoke(app, ["index", "rebuild", "--config", str(config)])
    assert result.exit_code == 0
    assert "not needed for the embedded backend" in result.output
