"""OpenSearch: an alias moved to an empty or foreign index is found out and rebuilt.

The same regression as tests/trove/test_lost_index.py, on the real node: after
the alias was pointed at an index that does not hold what the manifest says,
`trove status` and the `index_matches_manifest` check report it, and the next
`trove ingest` rewrites the documents from the state folder (nothing parsed or
embedded). A blue/green `trove index rebuild` keeps the generation: it is not
mistaken for a lost index.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest
import yaml

from assets.checks import index_matches_manifest, source_acls
from core.acl import Acl, Principal
from pipelines.store import StagingStore
from retrieval.index.base import WriteBatch
from retrieval.index.config import IndexConfig
from retrieval.index.opensearch.bulk import BulkWriter
from retrieval.index.opensearch.client import build_client
from retrieval.index.opensearch.index import OpenSearchIndex
from retrieval.index.opensearch.lifecycle import IndexLayout, alias_targets, rebuild
from tests.retrieval.builders import doc_records
from tests.trove.ingest_fakes import DIM, CountingEmbedder, use_embedder
from trove.config import load_settings
from trove.ingest import run_ingest
from trove.status import status

pytestmark = pytest.mark.opensearch

SOURCE = "notes"
STAFF = Principal.of("sam", ["staff"])
DOCS = {
    "travel.md": "# Travel\n\nPer diem covers pelican sightings on business trips.\n",
    "laptops.md": "# Laptops\n\nEvery starter receives a laptop with disk encryption.\n",
    "hr/salaries.md": "# Salaries\n\nSalary bands are reviewed every March by the board.\n",
}


def check_of(settings, source: str):
    index = OpenSearchIndex.open(settings.index)
    store = StagingStore.for_source(settings.state.path, source)
    try:
        return index_matches_manifest(source_acls(index, source), store, index, source)
    finally:
        store.close()
        index.close()


def found(settings, query: str) -> set[str]:
    index = OpenSearchIndex.open(settings.index)
    try:
        return {h.chunk_id.split("#")[0] for h in index.search_lexical(query, STAFF, k=10)}
    finally:
        index.close()


def test_alias_on_a_foreign_empty_index_is_reported_and_rebuilt(
    tmp_path, opensearch_prefix, monkeypatch
):
    url, prefix = opensearch_prefix
    embedder = CountingEmbedder()
    use_embedder(monkeypatch, embedder)
    for rel, text in DOCS.items():
        (tmp_path / "docs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "docs" / rel).write_text(text)
    index_config = {
        "backend": "opensearch",
        "hosts": [url],
        "index_prefix": prefix,
        "number_of_replicas": 0,
    }
    source = {
        "name": SOURCE,
        "path": "docs",
        "acl": {
            "default": {"allow_groups": ["staff"]},
            "rules": [{"match": "hr/**", "allow_groups": ["hr"]}],
        },
    }
    config = tmp_path / "trove.yaml"
    config.write_text(
        yaml.safe_dump({"index": index_config, "state": {"path": "state"}, "sources": [source]})
    )
    settings = load_settings(config)
    assert run_ingest(config)["sources"][SOURCE]["added"] == len(DOCS)
    assert found(settings, "pelican") == {"notes:travel.md"}
    chunks = status(settings)["sources"][SOURCE]["index"]["manifest_chunks"]
    assert status(settings)["ok"] is True and chunks >= len(DOCS)

    # Someone points the alias at an empty index Trove did not make.
    client = build_client(settings.index)
    layout = IndexLayout(prefix=prefix, replicas=0)
    (ours,) = alias_targets(client, layout.alias)
    foreign = f"{prefix}-someone-elses"  # under the prefix: cleaned up after
    client.indices.create(index=foreign, body=layout.body(DIM))
    client.indices.update_aliases(
        body={
            "actions": [
                {"remove": {"index": ours, "alias": layout.alias}},
                {"add": {"index": foreign, "alias": layout.alias}},
            ]
        }
    )
    assert found(settings, "pelican") == set()
    report = status(settings)
    agreement = report["sources"][SOURCE]["index"]
    assert report["ok"] is False and report["problems"][0]["fix"] == "trove ingest"
    assert (agreement["manifest_chunks"], agreement["index_chunks"]) == (chunks, 0)
    assert "no generation id" in agreement["error"]
    check = check_of(settings, SOURCE)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert (check.metadata["chunks_expected"].value, check.metadata["chunks_in_index"].value) == (
        chunks,
        0,
    )

    encoded = embedder.texts_encoded
    summary = run_ingest(config)["sources"][SOURCE]
    assert summary["rebuilt"] == len(DOCS) and summary["index_repair"]["refetched"] == 0
    assert summary["documents_parsed"] == 0 and embedder.texts_encoded == encoded
    assert found(settings, "pelican") == {"notes:travel.md"}
    assert found(settings, "salary") == set()  # its ACL came back with it
    assert status(settings)["ok"] is True and check_of(settings, SOURCE).passed

    # A blue/green rebuild copies the same chunks and keeps the generation.
    rebuild(client, layout)
    assert status(settings)["ok"] is True
    again = run_ingest(config)["sources"][SOURCE]
    assert again["rebuilt"] == 0 and again["unchanged"] == len(DOCS)
    client.close()


def test_a_batch_cut_short_already_names_a_new_generation(opensearch_prefix, monkeypatch):
    """No multi-document transactions: the generation moves before the first write, so a
    half-applied batch is never taken for the commit the pipeline recorded."""
    url, prefix = opensearch_prefix
    config = IndexConfig(
        backend="opensearch", hosts=[url], index_prefix=prefix, number_of_replicas=0
    )
    index = OpenSearchIndex.open(config, create=True, dimensions=DIM)
    rng = np.random.default_rng(3)
    staff = Acl(allow_groups=frozenset({"staff"}))
    index.apply(WriteBatch(upserts=doc_records("a", ["one"], staff, rng)))
    before = index.index_generation()

    def cut_short(self, actions):
        raise ConnectionError("the node went away mid-bulk")

    monkeypatch.setattr(BulkWriter, "write", cut_short)
    with pytest.raises(ConnectionError):
        index.apply(WriteBatch(upserts=doc_records("b", ["two"], staff, rng)))
    after = index.index_generation()
    index.close()
    assert after.index_id == before.index_id
    assert after.sequence == before.sequence + 1 and after.commit != before.commit
