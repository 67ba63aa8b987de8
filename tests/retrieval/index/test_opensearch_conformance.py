"""The OpenSearch backend passes the conformance suite on a real node.

The node is the session's ``opensearch_url`` (tests/conftest.py): ``OPENSEARCH_URL``
when set, else a single node (2.19 by default, k-NN and neural-search plugins)
that scripts/opensearch_node.py assembles from Maven Central and starts. Every
test runs there — lexical, dense (Lucene HNSW with the permission filter inside
``knn``), hybrid (neural-search ``hybrid`` through a normalization or RRF search
pipeline), restriction layers, deletes, ACL-only updates, readers during writes
and the blue/green rebuild. The emulator (osmem-server) is kept only for what a
real node cannot show (test_opensearch_osmem.py).
"""

from __future__ import annotations

import os

import pytest

from retrieval.index.config import IndexConfig
from retrieval.index.opensearch.index import OpenSearchIndex
from tests.retrieval.builders import DIM
from tests.retrieval.index.conformance import IndexConformance

pytestmark = pytest.mark.opensearch


class TestOpenSearchOnRealNode(IndexConformance):
    @pytest.fixture
    def index(self, opensearch_prefix):
        url, prefix = opensearch_prefix
        config = IndexConfig(
            backend="opensearch",
            hosts=[url],
            index_prefix=prefix,
            number_of_replicas=0,
            verify_certs=os.environ.get("OPENSEARCH_VERIFY_CERTS", "1") != "0",
        )
        ix = OpenSearchIndex.open(config, create=True, dimensions=DIM)
        yield ix
        ix.close()
