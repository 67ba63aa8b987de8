"""The OpenSearch backend passes the conformance suite.

* On osmem-server (always, in `make test`): everything lexical, ACL and CRUD.
  osmem rejects `knn` and `hybrid` queries, so only the dense and hybrid tests
  skip there; their request bodies are pinned in test_opensearch_queries.py.
* On a real cluster when ``OPENSEARCH_URL`` is set (e.g. ``docker compose up -d``
  then ``OPENSEARCH_URL=http://localhost:9200 pytest -m opensearch``): all of it.
"""

from __future__ import annotations

import os
import uuid

import pytest

from retrieval.index.opensearch.index import OpenSearchIndex
from tests.retrieval.builders import DIM
from tests.retrieval.index.conformance import IndexConformance
from trove.config import IndexConfig

pytestmark = pytest.mark.opensearch

REAL_CLUSTER = os.environ.get("OPENSEARCH_URL")


class TestOpenSearchOnOsmem(IndexConformance):
    dense_unsupported = (
        "osmem-server rejects knn and hybrid queries; their request bodies are pinned in "
        "test_opensearch_queries.py and they run against a real cluster (OPENSEARCH_URL)"
    )

    @pytest.fixture
    def index(self, osmem_url):
        config = IndexConfig(
            backend="opensearch", hosts=[osmem_url], index_prefix="conf", number_of_replicas=0
        )
        ix = OpenSearchIndex.open(config, create=True, dimensions=DIM)
        yield ix
        ix.close()


@pytest.mark.skipif(not REAL_CLUSTER, reason="set OPENSEARCH_URL to run against a real cluster")
class TestOpenSearchOnRealCluster(IndexConformance):
    @pytest.fixture
    def index(self):
        prefix = f"trove-test-{uuid.uuid4().hex[:10]}"
        config = IndexConfig(
            backend="opensearch",
            hosts=[REAL_CLUSTER],
            index_prefix=prefix,
            number_of_replicas=0,
            verify_certs=os.environ.get("OPENSEARCH_VERIFY_CERTS", "1") != "0",
        )
        ix = OpenSearchIndex.open(config, create=True, dimensions=DIM)
        yield ix
        client = ix.client
        client.indices.delete(index=f"{prefix}-chunks-v*", ignore_unavailable=True)
        for name in ix._pipelines:
            client.search_pipeline.delete(id=name)
        ix.close()
