"""What only a real OpenSearch node can show: mappings it accepted, faults it raises.

On the session's real node (``opensearch_url``, tests/conftest.py): every index
Trove writes maps the vector with engine ``lucene`` (also the blue/green copy),
a rebuild keeps readers answering throughout, a mapping conflict names the field,
a refused bulk item is reported while the rest is indexed, and a node that goes
away during ingest gives a clear error and the re-run completes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from core.acl import Acl, Principal
from retrieval.index.base import IndexBackendError, WriteBatch
from retrieval.index.config import IndexConfig
from retrieval.index.opensearch import queries
from retrieval.index.opensearch.bulk import BulkAction, BulkPolicy, BulkWriter
from retrieval.index.opensearch.errors import OpenSearchUnavailableError
from retrieval.index.opensearch.index import OpenSearchIndex
from retrieval.index.opensearch.lifecycle import IndexLayout, alias_targets, rebuild
from tests.retrieval.builders import DIM, doc_records

pytestmark = pytest.mark.opensearch

STAFF = Acl(allow_groups=frozenset({"staff"}))
ALICE = Principal.of("alice", ["staff"])


def config_for(url: str, prefix: str, **kw) -> IndexConfig:
    return IndexConfig(
        backend="opensearch", hosts=[url], index_prefix=prefix, number_of_replicas=0, **kw
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


def records_for(rng, docs: int, source: str = "hr"):
    out = []
    for i in range(docs):
        out += doc_records(
            f"{source}:doc{i}", ["travel policy", "hotel rates"], STAFF, rng, source=source
        )
    return out


def vector_engines(client, prefix: str) -> dict[str, str | None]:
    mappings = client.indices.get_mapping(index=f"{prefix}*")
    return {
        name: m["mappings"]["properties"]["embedding"].get("method", {}).get("engine")
        for name, m in mappings.items()
    }


def test_every_index_written_maps_the_vector_with_lucene(opensearch_prefix, rng):
    url, prefix = opensearch_prefix
    with pytest.raises(ValueError, match="engine 'faiss' is not supported"):
        OpenSearchIndex.open(
            config_for(url, prefix, knn_engine="faiss"), create=True, dimensions=DIM
        )
    assert (
        vector_engines(OpenSearchIndex.open(config_for(url, prefix), create=True).client, prefix)
        == {}
    )
    index = OpenSearchIndex.open(config_for(url, prefix), create=True, dimensions=DIM)
    index.apply(WriteBatch(upserts=records_for(rng, 3)))
    rebuild(index.client, index.layout, drop_old=False)  # the blue/green copy too
    engines = vector_engines(index.client, prefix)
    assert len(engines) == 2 and set(engines.values()) == {"lucene"}, engines
    index.close()


def test_rebuild_keeps_readers_answering_throughout(opensearch_prefix, rng):
    url, prefix = opensearch_prefix
    index = OpenSearchIndex.open(config_for(url, prefix), create=True, dimensions=DIM)
    records = records_for(rng, 20)
    index.apply(WriteBatch(upserts=records))
    query_vector = records[0].vector
    expected = {h.chunk_id for h in index.search_lexical("travel", ALICE, 100)}
    assert len(expected) == 20
    errors: list[BaseException] = []
    answers: list[set[str]] = []
    done = threading.Event()

    def read() -> None:
        reader = OpenSearchIndex.open(config_for(url, prefix))
        while not done.is_set():
            try:
                answers.append({h.chunk_id for h in reader.search_lexical("travel", ALICE, 100)})
                assert reader.search_dense(query_vector, ALICE, 5)
                assert reader.search_hybrid("hotel", query_vector, ALICE, 5)
            except BaseException as exc:
                errors.append(exc)
                return
        reader.close()

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    report = rebuild(index.client, index.layout, expected_by_source={"hr": len(records)})
    done.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert answers and all(a == expected for a in answers)
    assert alias_targets(index.client, f"{prefix}-chunks") == [report.new_index]
    index.close()


def test_a_mapping_conflict_on_an_existing_index_names_the_field(opensearch_prefix):
    url, prefix = opensearch_prefix
    layout = IndexLayout(prefix=prefix, replicas=0)
    body = layout.body(DIM)
    body["mappings"]["properties"]["acl_allow_users"] = {"type": "text"}
    client = OpenSearchIndex.open(config_for(url, prefix), create=True).client
    client.indices.create(index=f"{prefix}-chunks-v0001", body=body)
    client.indices.put_alias(index=f"{prefix}-chunks-v0001", name=f"{prefix}-chunks")
    with pytest.raises(
        IndexBackendError, match=r"'acl_allow_users' is mapped as text, Trove needs keyword"
    ):
        OpenSearchIndex.open(config_for(url, prefix))


def test_a_refused_bulk_item_is_reported_and_the_rest_indexed(opensearch_prefix, rng):
    url, prefix = opensearch_prefix
    index = OpenSearchIndex.open(config_for(url, prefix), create=True, dimensions=DIM)
    alias = f"{prefix}-chunks"
    good = {"chunk_id": "ok", "doc_id": "d", "embedding": rng.normal(size=DIM).tolist()}
    report = BulkWriter(index.client).write(
        [
            BulkAction.index_doc(alias, "ok", good),
            BulkAction.index_doc(alias, "unknown-field", {"chunk_id": "x", "bogus": 1}),
            BulkAction.index_doc(
                alias, "zero", {**good, "chunk_id": "zero", "embedding": [0.0] * DIM}
            ),
            BulkAction.index_doc(alias, "short", {**good, "chunk_id": "short", "embedding": [1.0]}),
        ]
    )
    assert report.succeeded == 1
    failed = {f.id: (f.status, f.error_type) for f in report.failures}
    assert failed["unknown-field"] == (400, "strict_dynamic_mapping_exception")
    assert set(failed) == {"unknown-field", "zero", "short"}
    assert all(status == 400 for status, _ in failed.values())
    index.client.indices.refresh(index=alias)
    assert index.client.count(index=alias)["count"] == 1
    index.close()


class CuttableProxy:
    """A loopback TCP proxy to the node whose connections can be cut mid-request."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut_now(self) -> None:
        self.cut.set()
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


@pytest.fixture
def proxy(opensearch_prefix) -> Iterator[CuttableProxy]:
    url, _ = opensearch_prefix
    p = CuttableProxy(int(url.rsplit(":", 1)[1]))
    yield p
    p.cut_now()


def test_the_node_going_away_during_ingest_fails_clearly_and_the_rerun_completes(
    opensearch_prefix, proxy, rng
):
    url, prefix = opensearch_prefix
    proxied = f"http://127.0.0.1:{proxy.port}"
    records = records_for(rng, 200)  # 400 chunks in bulk requests of 8
    index = OpenSearchIndex.open(
        config_for(proxied, prefix, timeout_s=5),
        create=True,
        dimensions=DIM,
        bulk_policy=BulkPolicy(max_actions=8, max_retries=0),
    )
    writer_calls = 0
    real_bulk = index.client.bulk

    def bulk_then_cut(*args, **kwargs):
        nonlocal writer_calls
        writer_calls += 1
        if writer_calls == 3:
            proxy.cut_now()  # the node is gone from here on
        return real_bulk(*args, **kwargs)

    index.client.bulk = bulk_then_cut  # type: ignore[method-assign]
    with pytest.raises(OpenSearchUnavailableError, match=rf"{proxied}.*unreachable.*run it again"):
        index.apply(WriteBatch(upserts=records))
    # The re-run on the node (reached directly now) completes: each chunk once.
    rerun = OpenSearchIndex.open(config_for(url, prefix), dimensions=DIM)
    rerun.apply(WriteBatch(upserts=records))
    assert rerun.stats().chunks == len(records)
    assert len(rerun.search_lexical("travel", ALICE, 1000)) == len(records) // 2  # chunk 0s
    rerun.close()


def test_the_node_down_before_ingest_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(IndexBackendError, match=rf"127\.0\.0\.1:{port}"):
        OpenSearchIndex.open(
            config_for(f"http://127.0.0.1:{port}", "down", timeout_s=2), create=True, dimensions=DIM
        )


def test_mapping_conflicts_ignore_fields_trove_does_not_map():
    wanted = queries.index_body(DIM)["mappings"]["properties"]
    assert queries.mapping_conflicts({"extra": {"type": "text"}, **wanted}, wanted) == []
    assert queries.mapping_conflicts(
        {"chunk_text": {"type": "text", "analyzer": "standard"}}, wanted
    ) == ["'chunk_text' uses analyzer 'standard', Trove needs 'trove_text'"]
