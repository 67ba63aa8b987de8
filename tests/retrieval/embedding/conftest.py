"""The shared embedder suite reports its failed asserts as test modules do."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.retrieval.embedding.conformance")
