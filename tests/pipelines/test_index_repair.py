"""The stages repair an index that lost documents, for an incremental source.

An incremental listing names only what changed since the cursor, so the
documents a lost index needs back are mostly *not* listed: they come back from
the state folder's copy (nothing fetched), or — without a copy — are fetched
by id and parsed again (vectors from the cache). The in-memory connector of
test_sync.py stands in for Confluence/Graph; the filesystem path and the
`trove ingest` scenarios are in tests/trove/test_lost_index.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.acl_policy import AclPolicy
from pipelines.config import InjectionConfig, PiiConfig
from pipelines.index_check import check_index
from pipelines.stages import (
    chunk_pending,
    embed_pending,
    parse_pending,
    scan_source,
    screen_pending,
    tag_pending,
    write_pending,
)
from retrieval.index.embedded import EmbeddedIndex
from tests.pipelines.test_stages import DIM, fake_chunk, fake_parse
from tests.pipelines.test_sync import ALICE, Harness


class CheckedHarness(Harness):
    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        self.tmp = tmp_path

    def run(self, crash_before_write: bool = False) -> dict:
        check = check_index(self.store, self.index, "wiki")
        scan = scan_source(
            self.config,
            self.store,
            AclPolicy.from_config(self.config.acl),
            self.connector,
            index_check=check,
        )
        parse_pending(self.store, fake_parse)
        chunk_pending(self.store, fake_chunk)
        screen_pending(self.store, PiiConfig(), InjectionConfig())
        tag_pending(self.store)
        embed_pending(self.store, self.encoder, self.cache)
        write_pending(self.store, self.index, self.cache, self.encoder.model_id)
        self.index.refresh()
        return {**self.store.last_run().to_dict(), "scan": scan}

    def lose_index(self, name: str) -> None:
        self.index.close()
        self.index = EmbeddedIndex.open(self.tmp / name, create=True, dimensions=DIM)


@pytest.fixture(params=["feed only", "with the id listing"])
def h(tmp_path, request):
    harness = CheckedHarness(tmp_path)
    if request.param == "feed only":
        # No permission sync on the runs below: only the change feed is read.
        interval = {"permission_sync_interval": timedelta(hours=1)}
        harness.config = harness.config.model_copy(update=interval)
    c = harness.connector
    c.put("p1", "Deploys happen on Tuesdays.")
    c.put("p2", "The on-call rota rotates weekly.")
    c.put("p3", "Incident reviews are blameless.")
    harness.run()
    c.fetched.clear()
    yield harness
    harness.index.close()


def test_unlisted_documents_come_back_from_the_state_folder_without_fetching(h):
    h.lose_index("elsewhere")
    embedded = h.encoder.texts_encoded
    summary = h.run()
    assert summary["rebuilt"] == 3 and summary["index_repair"]["rewritten_from_state"] == 3
    assert h.connector.fetched == [] and h.encoder.texts_encoded == embedded
    assert h.docs_found("Tuesdays", ALICE) == {"wiki:p1"}
    assert h.docs_found("blameless", ALICE) == {"wiki:p3"}
    assert check_index(h.store, h.index, "wiki", thorough=True).ok


def test_without_a_copy_they_are_fetched_by_id_and_parsed_but_not_embedded(h):
    h.store._conn.execute("DELETE FROM indexed_chunks")
    h.connector.delete("p3")  # and one went away meanwhile
    h.lose_index("elsewhere")
    embedded = h.encoder.texts_encoded
    summary = h.run()
    # p3 is tried by id where no listing says it went (the fetch says so: gone).
    assert set(h.connector.fetched) - {"p3"} == {"p1", "p2"}
    assert summary["index_repair"]["refetched"] == 2 and summary["deleted"] == 1
    assert h.encoder.texts_encoded == embedded
    assert h.docs_found("rota", ALICE) == {"wiki:p2"}
    assert h.docs_found("blameless", ALICE) == set()
    assert "wiki:p3" not in h.store.manifest()


def test_a_document_that_cannot_be_fetched_yet_is_compared_for_again_next_run(h):
    h.store._conn.execute("DELETE FROM indexed_chunks")
    h.connector.failing_fetch = {"p2"}
    h.lose_index("elsewhere")
    first = h.run()
    assert first["index_repair"]["not_repaired"] == 1
    assert h.docs_found("rota", ALICE) == set()
    # Not recorded as agreeing: the next run compares document by document again.
    assert h.store.index_generation() is None
    assert check_index(h.store, h.index, "wiki").missing == ("wiki:p2",)
    h.connector.failing_fetch = set()
    second = h.run()
    assert second["rebuilt"] == 1
    assert h.docs_found("rota", ALICE) == {"wiki:p2"}
    assert h.store.index_generation() == h.index.index_generation()
