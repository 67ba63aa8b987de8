"""The embedded index passes the backend conformance suite (dense and hybrid included)."""

from __future__ import annotations

import pytest

from retrieval.index.embedded import EmbeddedIndex
from tests.retrieval.builders import DIM
from tests.retrieval.index.conformance import IndexConformance


class TestEmbeddedConformance(IndexConformance):
    @pytest.fixture
    def index(self, tmp_path):
        ix = EmbeddedIndex.open(tmp_path / "index", create=True, dimensions=DIM)
        yield ix
        ix.close()
