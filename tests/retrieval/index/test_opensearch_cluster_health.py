"""Cluster health on the real node: yellow is served, red is refused with a clear message.

Both states are provoked for real: an index asking for a replica the single node
cannot hold makes the cluster yellow; an index whose shard allocation filter
excludes the only node leaves a primary unassigned, which makes it red. (A node
older than 2.19 cannot be provoked here: the test node is 2.19.1, so that
refusal stays on the fake client in test_opensearch_client.py.)
"""

from __future__ import annotations

import time

import pytest
from opensearchpy import OpenSearch

from retrieval.index.config import IndexConfig
from retrieval.index.opensearch.errors import OpenSearchUnavailableError
from retrieval.index.opensearch.index import OpenSearchIndex
from tests.retrieval.builders import DIM

pytestmark = pytest.mark.opensearch


def _wait_for(client: OpenSearch, status: str) -> None:
    deadline = time.monotonic() + 30
    while client.cluster.health()["status"] != status:
        if time.monotonic() > deadline:
            raise AssertionError(f"the cluster never became {status}")
        time.sleep(0.2)


def test_yellow_is_served_and_red_is_refused_naming_the_unassigned_shards(opensearch_prefix):
    url, prefix = opensearch_prefix
    config = IndexConfig(
        backend="opensearch", hosts=[url], index_prefix=prefix, number_of_replicas=0
    )
    client = OpenSearch(hosts=[url], timeout=60)
    try:
        OpenSearchIndex.open(config, create=True, dimensions=DIM).close()
        _wait_for(client, "green")

        client.indices.create(
            index=f"{prefix}-wants-a-replica",
            body={"settings": {"number_of_shards": 1, "number_of_replicas": 1}},
        )
        _wait_for(client, "yellow")
        OpenSearchIndex.open(config).close()  # a replica short: still serving

        client.indices.create(
            index=f"{prefix}-nowhere-to-go",
            body={
                "settings": {
                    "number_of_shards": 1,
                    "number_of_replicas": 0,
                    "index.routing.allocation.require._name": "no-such-node",
                }
            },
            params={"wait_for_active_shards": "0"},
        )
        _wait_for(client, "red")
        with pytest.raises(OpenSearchUnavailableError, match=r"is red .* unassigned shards"):
            OpenSearchIndex.open(config)
    finally:
        # The cluster is shared by the session: never leave it red or yellow.
        client.indices.delete(
            index=f"{prefix}-wants-a-replica,{prefix}-nowhere-to-go", ignore_unavailable=True
        )
        client.close()
    OpenSearchIndex.open(config).close()  # green again: served
