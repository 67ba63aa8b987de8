"""Connection options, readiness/version checks, and the k-NN/hybrid request wiring
of ``OpenSearchIndex`` (with a recording fake client: osmem rejects these queries)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opensearchpy import Urllib3AWSV4SignerAuth
from opensearchpy import exceptions as os_errors

from core.acl import Principal
from retrieval.index.base import IndexBackendError
from retrieval.index.config import IndexConfig, OpenSearchAuthConfig
from retrieval.index.opensearch import queries as q
from retrieval.index.opensearch.client import check_ready, client_options, parse_version
from retrieval.index.opensearch.errors import OpenSearchUnavailableError, OpenSearchVersionError
from retrieval.index.opensearch.index import OpenSearchIndex
from retrieval.models import NO_FILTERS
from tests.retrieval.builders import DIM, unit

pytestmark = pytest.mark.opensearch

ALICE = Principal.of("alice", ["eng"], tenant="t1")


# ---------------------------------------------------------------- options


def test_client_options_tls_and_basic_auth():
    config = IndexConfig(
        backend="opensearch",
        hosts=["https://os1:9200", "https://os2:9200"],
        auth=OpenSearchAuthConfig(username="trove", password="s3cret"),
        ca_certs=Path("/etc/ca.pem"),
        client_cert=Path("/etc/c.pem"),
        client_key=Path("/etc/k.pem"),
        timeout_s=12,
    )
    opts = client_options(config)
    assert opts["hosts"] == ["https://os1:9200", "https://os2:9200"]
    assert opts["use_ssl"] is True and opts["verify_certs"] is True
    assert (opts["ca_certs"], opts["client_cert"], opts["client_key"]) == (
        "/etc/ca.pem",
        "/etc/c.pem",
        "/etc/k.pem",
    )
    assert opts["http_auth"] == ("trove", "s3cret")
    assert opts["timeout"] == 12 and opts["retry_on_timeout"] is True
    assert set(opts["retry_on_status"]) == {502, 503, 504}


def test_client_options_sigv4_and_conflicts():
    creds = object()
    config = IndexConfig(
        backend="opensearch",
        hosts=["https://search.eu-west-1.es.amazonaws.com"],
        auth=OpenSearchAuthConfig(aws_region="eu-west-1", aws_service="aoss"),
    )
    auth = client_options(config, aws_credentials=lambda: creds)["http_auth"]
    assert isinstance(auth, Urllib3AWSV4SignerAuth)
    signer = auth.signer
    assert (signer.credentials, signer.region, signer.service) == (creds, "eu-west-1", "aoss")
    both = config.model_copy(
        update={"auth": OpenSearchAuthConfig(username="u", password="p", aws_region="x")}
    )
    with pytest.raises(ValueError, match="not both"):
        client_options(both)
    half = config.model_copy(update={"auth": OpenSearchAuthConfig(username="u")})
    with pytest.raises(ValueError, match="both username and password"):
        client_options(half)


def test_parse_version():
    assert parse_version("3.2.0") == (3, 2)
    assert parse_version("2.19.1-SNAPSHOT") == (2, 19)
    with pytest.raises(OpenSearchVersionError):
        parse_version("banana")


# ---------------------------------------------------------------- readiness


class FakeCluster:
    def __init__(self, owner: FakeClient):
        self.owner = owner

    def health(self, **kw) -> dict:
        return {"status": self.owner.health_status}


class FakeIndices:
    def __init__(self, owner: FakeClient):
        self.owner = owner

    def get_alias(self, name: str) -> dict:
        return {"t-chunks-v0001": {"aliases": {name: {}}}}

    def get_mapping(self, index: str) -> dict:
        return {
            index: {
                "mappings": {"properties": {"embedding": {"type": "knn_vector", "dimension": DIM}}}
            }
        }

    def put_mapping(self, index: str, body: dict) -> dict:
        self.owner.mapping_updates.append((index, body))
        return {"acknowledged": True}


class FakePipelines:
    def __init__(self, owner: FakeClient):
        self.owner = owner

    def put(self, id: str, body: dict) -> dict:
        self.owner.pipelines[id] = body
        return {"acknowledged": True}


class FakeClient:
    """Just enough of ``OpenSearch`` for ``OpenSearchIndex.open`` and searches."""

    def __init__(self, number: str = "3.1.0", distribution: str = "opensearch", info_error=None):
        self.number = number
        self.distribution = distribution
        self.info_error = info_error
        self.health_status = "green"
        self.cluster = FakeCluster(self)
        self.indices = FakeIndices(self)
        self.mapping_updates: list = []
        self.search_pipeline = FakePipelines(self)
        self.pipelines: dict[str, dict] = {}
        self.searches: list[tuple[dict, dict]] = []
        self.hits: list[dict] = []

    def info(self) -> dict:
        if self.info_error:
            raise self.info_error
        return {
            "cluster_name": "c",
            "version": {"number": self.number, "distribution": self.distribution},
        }

    def search(self, index: str, body: dict, **params: Any) -> dict:
        self.searches.append((body, params))
        return {"hits": {"hits": self.hits}}

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("client", "error", "message"),
    [
        (FakeClient("2.11.0"), OpenSearchVersionError, r"2\.11\.0 .* too old.*2\.19"),
        (FakeClient("8.12.0", "elasticsearch"), OpenSearchVersionError, "not OpenSearch"),
        (
            FakeClient(info_error=os_errors.AuthenticationException(401, "unauthorized", {})),
            OpenSearchUnavailableError,
            "rejected the credentials",
        ),
        (
            FakeClient(info_error=os_errors.ConnectionError("N/A", "refused", None)),
            OpenSearchUnavailableError,
            "cannot reach OpenSearch at http://os:9200",
        ),
    ],
)
def test_readiness_errors_say_what_is_wrong(client, error, message):
    with pytest.raises(error, match=message):
        check_ready(client, ["http://os:9200"])


def test_readiness_refuses_a_red_cluster_and_reports_versions():
    client = FakeClient("2.19.0")
    cluster = check_ready(client, ["http://os:9200"])
    assert cluster.version == (2, 19) and not cluster.supports_hybrid_filter
    assert not cluster.supports_rrf_weights
    client.health_status = "red"
    with pytest.raises(OpenSearchUnavailableError, match="red"):
        check_ready(client, ["http://os:9200"])


# ---------------------------------------------------------------- k-NN and hybrid wiring


def open_fake(number: str, combination: str = "normalization") -> tuple[OpenSearchIndex, Any]:
    client = FakeClient(number)
    config = IndexConfig(
        backend="opensearch",
        hosts=["http://os:9200"],
        index_prefix="t",
        hybrid_combination=combination,
        pagination_depth=120,
    )
    return OpenSearchIndex.open(config, client=client), client


def test_search_dense_sends_an_efficient_filter_and_returns_cosines():
    index, client = open_fake("3.1.0")
    client.hits = [
        {"_score": 1.0, "_source": {"chunk_id": "a"}},
        {"_score": 0.75, "_source": {"chunk_id": "b"}},
    ]
    v = unit(np.random.default_rng(0)) * 3.0  # not normalised: the index normalises
    hits = index.search_dense(v, ALICE, 7)
    assert [(h.chunk_id, h.score) for h in hits] == [("a", 1.0), ("b", 0.5)]  # 2s - 1
    body, params = client.searches[-1]
    ef = IndexConfig().knn_ef_search  # the configured HNSW queue travels with every k-NN query
    assert body == q.knn_query(v / np.linalg.norm(v), ALICE, 7, NO_FILTERS, ef_search=ef)
    assert body["query"]["knn"]["embedding"]["method_parameters"] == {"ef_search": ef}
    assert params == {}
    with pytest.raises(ValueError, match="dimensions"):
        index.search_dense(np.ones(DIM + 1), ALICE, 3)


@pytest.mark.parametrize("number", ["2.19.0", "3.0.0"])
def test_search_hybrid_sends_one_request_through_the_pipeline(number):
    index, client = open_fake(number)
    client.hits = [{"_score": 0.9, "_source": {"chunk_id": "a"}}]
    v = unit(np.random.default_rng(0))
    hits = index.search_hybrid("vpn token", v, ALICE, 10, dense_weight=0.7)
    assert [(h.chunk_id, h.score) for h in hits] == [("a", 0.9)]
    body, params = client.searches[-1]
    version = (int(number[0]), int(number[2:4].rstrip(".")))
    ef = IndexConfig().knn_ef_search
    assert body == q.hybrid_query(
        "vpn token", v, ALICE, 10, NO_FILTERS, version=version, pagination_depth=120, ef_search=ef
    )
    knn = body["query"]["hybrid"]["queries"][1]["knn"]["embedding"]
    assert knn["method_parameters"] == {"ef_search": ef}
    assert ("filter" in body["query"]["hybrid"]) == (version >= (3, 0))
    assert params == {"search_pipeline": "t-hybrid-minmax-d070"}
    assert client.pipelines == {"t-hybrid-minmax-d070": q.normalization_pipeline(0.7)}
    index.search_hybrid("again", v, ALICE, 10, dense_weight=0.7)
    assert len(client.pipelines) == 1  # created once per configuration


def test_search_hybrid_with_rrf():
    index, client = open_fake("3.1.0", "rrf")
    index.search_hybrid("vpn", unit(np.random.default_rng(0)), ALICE, 5, rrf_k=30)
    _, params = client.searches[-1]
    assert params == {"search_pipeline": "t-hybrid-rrf30-d050"}
    assert client.pipelines["t-hybrid-rrf30-d050"] == q.rrf_pipeline(30, 0.5)


# ---------------------------------------------------------------- delete-by-query conflicts


def test_delete_by_query_retries_version_conflicts_then_gives_up():
    index, client = open_fake("3.1.0")
    responses = [
        {"deleted": 2, "version_conflicts": 1, "failures": []},
        {"deleted": 1, "version_conflicts": 0, "failures": []},
    ]
    calls: list[dict] = []

    def delete_by_query(index: str, body: dict, params: dict) -> dict:
        calls.append(params)
        return responses.pop(0)

    client.delete_by_query = delete_by_query
    assert index._delete_by_query(q.docs_query(["d1"]), "deleting d1") == 3
    assert calls[0] == {"conflicts": "proceed", "refresh": "true"}

    client.delete_by_query = lambda **kw: {"deleted": 0, "version_conflicts": 4, "failures": []}
    with pytest.raises(IndexBackendError, match="4 version conflicts after 3 tries"):
        index._delete_by_query(q.docs_query(["d1"]), "deleting d1")
    client.delete_by_query = lambda **kw: {"failures": [{"cause": "shard down"}]}
    with pytest.raises(IndexBackendError, match="shard down"):
        index._delete_by_query(q.docs_query(["d1"]), "deleting d1")


def test_opening_an_older_index_adds_the_acl_layer_fields_to_its_mapping():
    _index, client = open_fake("3.1.0")
    assert len(client.mapping_updates) == 1
    physical, body = client.mapping_updates[0]
    assert physical == "t-chunks-v0001"
    assert body["properties"]["acl_layer_count"] == {"type": "integer"}
    assert body["properties"]["acl_layers"]["type"] == "keyword"
    assert "embedding" not in body["properties"]  # only what is missing
