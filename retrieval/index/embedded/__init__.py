"""The embedded on-disk hybrid index (BM25 + dense), Trove's default backend."""

from retrieval.index.embedded.bm25 import Bm25Params, Bm25Variant
from retrieval.index.embedded.index import EmbeddedIndex

__all__ = ["Bm25Params", "Bm25Variant", "EmbeddedIndex"]
