"""A real OpenSearch node for the benchmarks, and what it costs (disk, resident memory).

``--opensearch-url`` (or ``OPENSEARCH_URL``) names a running node; otherwise
``scripts/opensearch_node.py`` starts one from its Maven cache in a temporary
state folder (docs/opensearch.md) and stops it when the benchmark ends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from retrieval.index.config import IndexConfig
from trove.bench.errors import BenchError

NODE_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "opensearch_node.py"
START_TIMEOUT_S = 900


class NodeError(BenchError):
    """No OpenSearch node could be reached or started; the message says why."""


@contextmanager
def opensearch_node(url: str | None = None) -> Iterator[str]:
    """The URL of a running node: ``url``, ``OPENSEARCH_URL``, or one started here."""
    url = url or os.environ.get("OPENSEARCH_URL")
    if url:
        yield url.rstrip("/")
        return
    # World-readable: as root the node runs as another user (OpenSearch refuses root).
    parent = Path(tempfile.mkdtemp(prefix="trove-bench-opensearch-"))
    parent.chmod(0o755)
    state = parent / "node"
    command = [sys.executable, str(NODE_SCRIPT)]
    options = ["--state-dir", str(state), "--json"]
    try:
        started = subprocess.run(
            [*command, "start", *options], capture_output=True, text=True, timeout=START_TIMEOUT_S
        )
        if started.returncode != 0:
            raise NodeError(f"could not start an OpenSearch node:\n{started.stderr[-3000:]}")
        yield json.loads(started.stdout.strip().splitlines()[-1])["url"]
    finally:
        subprocess.run([*command, "stop", *options], capture_output=True, timeout=120)
        shutil.rmtree(parent, ignore_errors=True)


def index_config(url: str, prefix: str, **overrides: Any) -> IndexConfig:
    """A single-node configuration (no replicas: nowhere to put them) for ``prefix``."""
    return IndexConfig(
        backend="opensearch",
        hosts=[url],
        index_prefix=prefix,
        number_of_replicas=0,
        timeout_s=120,
        **overrides,
    )


def node_memory(client: Any) -> dict[str, Any]:
    """The node's JVM heap in use and, when it runs on this machine, its resident memory."""
    stats = client.nodes.stats(metric="jvm,process")
    node = next(iter(stats["nodes"].values()))
    heap_mb = node["jvm"]["mem"]["heap_used_in_bytes"] / 2**20
    out: dict[str, Any] = {"heap_used_mb": round(heap_mb, 1)}
    info = client.nodes.info(metric="process")
    pid = next(iter(info["nodes"].values()))["process"]["id"]
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    else:
        out["rss_mb"] = None  # a remote node: its memory is not visible from here
    return out


def drop_prefix(client: Any, prefix: str) -> None:
    """Delete every index and search pipeline a benchmark created under ``prefix``."""
    client.indices.delete(index=f"{prefix}*", ignore_unavailable=True, expand_wildcards="all")
    for name in client.search_pipeline.get(ignore=404):
        if name.startswith(prefix):
            client.search_pipeline.delete(id=name)


def node_version(url: str) -> str:
    """The version number the node at ``url`` reports."""
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[url], timeout=30)
    try:
        return client.info()["version"]["number"]
    finally:
        client.close()
