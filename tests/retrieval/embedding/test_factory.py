"""The factory picks the configured backend; the package keeps its imports in one direction."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import retrieval.embedding as embedding_package
from core.errors import TroveError
from retrieval.embedding.base import EmbeddingError
from retrieval.embedding.config import EmbeddingConfig
from retrieval.embedding.factory import (
    BACKENDS,
    DEFAULT_BACKEND,
    create_embedder,
    embedder_from_config,
    get_embedder,
)
from retrieval.embedding.onnx_backend import OnnxEmbedder
from retrieval.embedding.torch_backend import TorchEmbedder

FIRST_PARTY = ("core", "connectors", "retrieval", "pipelines", "assets", "trove")


def test_the_config_picks_the_backend(tmp_path):
    default = embedder_from_config(EmbeddingConfig(), cache_dir=tmp_path)
    assert isinstance(default, OnnxEmbedder) and default.backend == DEFAULT_BACKEND
    assert EmbeddingConfig().backend == DEFAULT_BACKEND  # one default, stated twice
    torch_emb = embedder_from_config(EmbeddingConfig(backend="torch", batch_size=8))
    assert isinstance(torch_emb, TorchEmbedder) and torch_emb.batch_size == 8
    # A GPU device without a backend named means torch (EmbeddingConfig's rule).
    gpu = embedder_from_config(EmbeddingConfig(device="cuda"))
    assert isinstance(gpu, TorchEmbedder) and gpu.device == "cuda"
    assert not gpu.query_ready  # created, not loaded


def test_config_and_arguments_share_one_instance_and_create_makes_new_ones(tmp_path):
    config = EmbeddingConfig(backend="torch", batch_size=5)
    shared = get_embedder(config.model, batch_size=5, backend="torch")
    assert embedder_from_config(config) is shared
    made = create_embedder(config.model, batch_size=5, backend="torch")
    assert made is not shared and made is not create_embedder(backend="torch", batch_size=5)
    assert made.model_id == shared.model_id


@pytest.mark.parametrize("make", [create_embedder, get_embedder])
def test_unknown_backends_and_gpus_for_onnx_are_refused_with_the_valid_names(make):
    with pytest.raises(EmbeddingError, match=f"valid: {', '.join(BACKENDS)}"):
        make(backend="tensorrt")
    with pytest.raises(EmbeddingError, match=r"CPU only.*'cuda'"):
        make(backend="onnx", device="cuda")


def test_embedding_errors_are_trove_errors():
    assert issubclass(EmbeddingError, TroveError)
    assert issubclass(EmbeddingError, RuntimeError)  # as before the error root existed


def test_importing_every_backend_loads_no_model_library():
    """Naming a backend, reading its tokenizer and size: no torch, transformers or onnxruntime."""
    probe = (
        "import sys\n"
        "from retrieval.embedding.factory import get_embedder\n"
        "for backend in ('torch', 'onnx-int8'):\n"
        "    get_embedder('all-MiniLM-L6-v2', backend=backend)\n"
        "get_embedder('all-MiniLM-L6-v2').tokenizer.encode('a chunk')\n"
        "heavy = ('torch', 'transformers', 'onnxruntime', 'onnx', 'sentence_transformers')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def _function_level_first_party_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            names = []
            if isinstance(inner, ast.ImportFrom) and inner.module and inner.level == 0:
                names = [inner.module]
            elif isinstance(inner, ast.Import):
                names = [alias.name for alias in inner.names]
            found += [n for n in names if n.split(".")[0] in FIRST_PARTY]
    return found


def test_first_party_imports_sit_at_module_level():
    """Only onnx_graph is imported inside a function: it imports onnx, which only a
    build needs. Nothing else is deferred, so no import can hide a cycle."""
    folder = Path(embedding_package.__file__).parent
    deferred = {
        f"{path.name}: {name}"
        for path in sorted(folder.glob("*.py"))
        for name in _function_level_first_party_imports(path)
    }
    assert deferred == {"onnx_backend.py: retrieval.embedding.onnx_graph"}
