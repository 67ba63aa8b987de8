"""The connector contract through the real stages: cursors, partial listings, permission re-sync.

An in-memory incremental connector (a change log with sequence numbers as the
cursor, content only through ``fetch``) stands in for Confluence/Graph here;
the real connectors are tested against loopback fakes in tests/connectors and
end to end in tests/e2e.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from connectors.base import ChangeBatch, DocumentStamp
from connectors.errors import ConnectorError, DocumentGone
from connectors.models import SourceDocument
from core.acl import Acl, AclLayer, Principal
from core.acl_policy import AclPolicy
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
from pipelines.sync import CURSOR, RETRY_IDS
from retrieval.index.embedded import EmbeddedIndex
from tests.pipelines.test_stages import DIM, CountingEncoder, fake_chunk, fake_parse

ENG = Acl(allow_groups=frozenset({"wiki:group:eng"}))


@dataclass
class Doc:
    text: str
    version: int = 1
    acl: Acl = ENG


@dataclass
class MemoryConnector:
    """Incremental: ``changes`` replays the change log after the cursor, two entries a batch."""

    source: str = "wiki"
    docs: dict[str, Doc] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)  # (native id, "put"|"delete")
    fail_after_batches: int | None = None
    failing_fetch: set[str] = field(default_factory=set)
    fetched: list[str] = field(default_factory=list)
    listed: int = 0
    folder: dict[str, str] = field(default_factory=dict)  # native id -> parent path override

    def put(self, native: str, text: str, acl: Acl = ENG) -> None:
        old = self.docs.get(native)
        self.docs[native] = Doc(text, (old.version + 1) if old else 1, acl)
        self.log.append((native, "put"))

    def delete(self, native: str) -> None:
        del self.docs[native]
        self.log.append((native, "delete"))

    def _path(self, native: str) -> str:
        return f"{self.folder.get(native, 'SPACE')}/{native}"

    def _doc(self, native: str, content: bool) -> SourceDocument:
        d = self.docs[native]
        return SourceDocument(
            doc_id=f"{self.source}:{native}",
            source=self.source,
            path=self._path(native),
            uri=f"https://wiki.example/{native}",
            title=native,
            version=str(d.version),
            size=len(d.text),
            modified_at=None,
            doc_type="txt",
            acl=d.acl,
            content=d.text.encode() if content else None,
        )

    def changes(self, cursor):
        start = json.loads(cursor)["seq"] if cursor else 0
        for batches, i in enumerate(range(start, len(self.log), 2)):
            if self.fail_after_batches is not None and batches >= self.fail_after_batches:
                raise ConnectorError("503 after retries")
            entries = self.log[i : i + 2]
            docs = [self._doc(n, False) for n, op in entries if op == "put" and n in self.docs]
            gone = [f"{self.source}:{n}" for n, op in entries if op == "delete"]
            yield ChangeBatch(documents=docs, deleted=gone, cursor=json.dumps({"seq": i + 2}))

    def list_ids(self):
        self.listed += 1
        for native, d in self.docs.items():
            yield DocumentStamp(
                f"{self.source}:{native}", str(d.version), d.acl, self._path(native)
            )

    def fetch(self, doc_id):
        native = doc_id.split(":", 1)[1]
        self.fetched.append(native)
        if native in self.failing_fetch:
            raise ConnectorError("download timed out")
        if native not in self.docs:
            raise DocumentGone(doc_id)
        return self._doc(native, True)

    def close(self):
        pass


class Harness:
    def __init__(self, tmp_path):
        self.store = StagingStore(tmp_path / "staging.sqlite")
        self.cache = EmbeddingCache(tmp_path / "cache.sqlite")
        self.index = EmbeddedIndex.open(tmp_path / "index", create=True, dimensions=DIM)
        self.encoder = CountingEncoder()
        self.connector = MemoryConnector()
        self.config = SourceConfig.model_validate(
            {
                "name": "wiki",
                "type": "web",  # any remote type: the connector is injected
                "web": {"start_urls": ["https://wiki.example/"]},
            }
        )

    def run(self, crash_before_write: bool = False) -> dict:
        scan = scan_source(self.config, self.store, AclPolicy.from_config(self.config.acl),
                           self.connector)  # fmt: skip
        parse_pending(self.store, fake_parse)
        chunk_pending(self.store, fake_chunk)
        screen_pending(self.store, PiiConfig(), InjectionConfig())
        tag_pending(self.store)
        embed_pending(self.store, self.encoder, self.cache)
        if crash_before_write:
            return {"scan": scan}
        write_pending(self.store, self.index, self.cache, self.encoder.model_id)
        self.index.refresh()
        return {**self.store.last_run().to_dict(), "scan": scan}

    def docs_found(self, query: str, principal: Principal) -> set[str]:
        return {h.chunk_id.split("#")[0] for h in self.index.search_lexical(query, principal, 50)}


ALICE = Principal.of("alice@example.com", ["wiki:group:eng"])
BOB = Principal.of("bob@example.com", ["wiki:group:eng", "wiki:group:leads"])


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    c = harness.connector
    c.put("p1", "Deploys happen on Tuesdays.")
    c.put("p2", "The on-call rota rotates weekly.")
    c.put("p3", "Incident reviews are blameless.")
    yield harness
    harness.index.close()


def test_first_sync_fetches_bytes_only_for_new_documents_and_commits_the_cursor(h):
    first = h.run()
    assert first["added"] == 3 and first["sync_error"] is None
    assert sorted(h.connector.fetched) == ["p1", "p2", "p3"]
    assert h.store.counter(CURSOR) == json.dumps({"seq": 4})
    assert h.docs_found("Tuesdays", ALICE) == {"wiki:p1"}
    h.connector.fetched.clear()
    again = h.run()
    assert again["added"] == again["changed"] == 0 and h.connector.fetched == []


def test_incremental_changes_and_explicit_deletions(h):
    h.run()
    h.connector.put("p1", "Deploys happen on Thursdays now.")
    h.connector.delete("p3")
    h.connector.fetched.clear()
    summary = h.run()
    assert (summary["changed"], summary["deleted"]) == (1, 1)
    assert h.connector.fetched == ["p1"]
    assert h.docs_found("Thursdays", ALICE) == {"wiki:p1"}
    assert h.docs_found("blameless", ALICE) == set()


def test_the_cursor_moves_only_with_the_index(h):
    h.run(crash_before_write=True)  # scan ran, the write never happened
    assert h.store.counter(CURSOR) is None
    assert h.docs_found("Tuesdays", ALICE) == set()
    summary = h.run()  # the next run starts again from the last committed cursor
    assert summary["added"] == 3
    assert h.docs_found("Tuesdays", ALICE) == {"wiki:p1"}


def test_a_listing_cut_short_indexes_what_it_got_and_resumes_from_the_last_batch(h):
    h.connector.put("p4", "Holidays are booked in the HR portal.")
    h.connector.put("p5", "Expenses need a receipt.")
    h.connector.fail_after_batches = 1
    partial = h.run()
    assert partial["added"] == 2 and "503" in partial["sync_error"]
    assert h.store.counter(CURSOR) == json.dumps({"seq": 2})
    h.connector.fail_after_batches = None
    h.connector.fetched.clear()
    rest = h.run()
    assert rest["added"] == 3 and rest["sync_error"] is None
    assert sorted(h.connector.fetched) == ["p3", "p4", "p5"]  # nothing fetched twice
    assert h.docs_found("receipt", ALICE) == {"wiki:p5"}


def test_a_failed_listing_with_nothing_gathered_fails_the_stage(h):
    h.connector.fail_after_batches = 0
    with pytest.raises(ConnectorError, match="503"):
        h.run()


def test_a_failed_fetch_is_recorded_and_retried_by_id_next_run(h):
    h.connector.failing_fetch = {"p2"}
    first = h.run()
    assert [f["path"] for f in first["documents_failed"]] == ["SPACE/p2"]
    assert "download timed out" in first["documents_failed"][0]["reason"]
    assert h.store.counter(RETRY_IDS) == ["wiki:p2"]
    h.connector.failing_fetch = set()
    second = h.run()  # the cursor moved past p2, the retry list did not forget it
    assert second["added"] == 1 and second["documents_failed"] == []
    assert h.docs_found("rota", ALICE) == {"wiki:p2"}
    assert h.store.counter(RETRY_IDS) == []


def test_permission_change_without_a_new_version_is_resynced_without_embedding(h):
    h.run()
    embedded = h.encoder.texts_encoded
    # An ancestor gains a restriction to the leads: no new version, no change-log entry.
    h.connector.docs["p2"].acl = Acl(
        allow_groups=frozenset({"wiki:group:eng"}),
        layers=(AclLayer(groups=frozenset({"wiki:group:leads"})),),
    )
    summary = h.run()
    assert summary["acl_only"] == 1 and summary["changed"] == 0
    assert h.encoder.texts_encoded == embedded
    assert h.docs_found("rota", ALICE) == set()
    assert h.docs_found("rota", BOB) == {"wiki:p2"}


def test_the_id_listing_catches_deletions_the_change_feed_never_reported(h):
    h.run()
    del h.connector.docs["p3"]  # purged: no log entry
    summary = h.run()
    assert summary["deleted"] == 1
    assert h.docs_found("blameless", ALICE) == set()


def test_permission_sync_interval_skips_the_id_listing_until_due(h):
    from datetime import timedelta

    h.config = h.config.model_copy(update={"permission_sync_interval": timedelta(hours=1)})
    h.run()
    h.run()
    assert h.connector.listed == 1


def test_a_complete_listing_deletes_what_it_did_not_name(tmp_path):
    from tests.pipelines.test_stages import Pipeline

    p = Pipeline(tmp_path)
    p.write("a.md", "Alpha text.")
    p.write("b.md", "Beta text.")
    p.run()
    (p.root / "b.md").unlink()
    assert p.run()["deleted"] == 1
    p.index.close()


def test_a_path_moved_without_a_new_version_is_reindexed_from_the_cache(h):
    h.run()
    embedded = h.encoder.texts_encoded
    h.connector.folder["p1"] = "SPACE/Renamed parent"  # an ancestor renamed: no new version
    summary = h.run()
    assert summary["changed"] == 1 and summary["acl_only"] == 0
    assert h.encoder.texts_encoded == embedded  # the text is unchanged: vectors from the cache
    (record,) = h.index.document_chunks("wiki:p1")
    assert record.path == "SPACE/Renamed parent/p1"
