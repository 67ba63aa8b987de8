"""The ONNX Runtime embedding backend: selection, layout checks, vectors close to torch, build.

Unit tests need no build. Tests marked ``model`` use the real MiniLM, built once
into the default model cache (``~/.cache/trove/models``, as in production);
the build itself and the throughput bar are ``slow``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval.embedding.base import EmbeddingError, resolve_model_path
from retrieval.embedding.factory import get_embedder
from retrieval.embedding.onnx_backend import (
    FORMAT_VERSION,
    QUERY_FILE,
    OnnxEmbedder,
    build_dir_for,
    build_onnx_model,
    default_cache_dir,
)
from retrieval.embedding.torch_backend import TorchEmbedder

TEXTS = [
    "Annual leave can be carried over up to 240 hours into the next leave year.",
    "Report a suspected security incident to the IT service desk; do not turn off the laptop.",
    "Travel > Reimbursement\n\nCreate a voucher in Concur within five days of returning.",
    "short",
    "The supervisor signs and submits the mid-year evaluation in HR Links. " * 12,
    "Paid parental leave gives twelve weeks of paid time off after a birth or adoption.",
]


# --- selection and construction (no model build) ---------------------------------------


def test_get_embedder_honours_the_backend(tmp_path):
    torch_emb = get_embedder("all-MiniLM-L6-v2", backend="torch")
    onnx_emb = get_embedder("all-MiniLM-L6-v2", backend="onnx-int8", cache_dir=tmp_path)
    assert isinstance(torch_emb, TorchEmbedder)
    assert isinstance(onnx_emb, OnnxEmbedder)
    assert onnx_emb.backend == "onnx-int8"
    assert get_embedder("all-MiniLM-L6-v2", backend="onnx-int8", cache_dir=tmp_path) is onnx_emb
    fp32 = get_embedder("all-MiniLM-L6-v2", backend="onnx", cache_dir=tmp_path)
    assert fp32.backend == "onnx" and fp32 is not onnx_emb


def test_model_ids_differ_between_backends_because_they_key_the_embedding_cache(tmp_path):
    ids = {
        TorchEmbedder("all-MiniLM-L6-v2").model_id,
        OnnxEmbedder("all-MiniLM-L6-v2", quantize=True, cache_dir=tmp_path).model_id,
        OnnxEmbedder("all-MiniLM-L6-v2", quantize=False, cache_dir=tmp_path).model_id,
    }
    assert len(ids) == 3
    # Aliases of one model still share one id within a backend.
    assert (
        OnnxEmbedder("all-MiniLM-L6-v2", cache_dir=tmp_path).model_id
        == OnnxEmbedder("sentence-transformers/all-MiniLM-L6-v2", cache_dir=tmp_path).model_id
    )


def test_unknown_backend_and_gpu_device_are_refused():
    with pytest.raises(EmbeddingError, match="unknown embedding backend 'tensorrt'"):
        get_embedder(backend="tensorrt")
    with pytest.raises(EmbeddingError, match=r"CPU only.*'cuda'"):
        get_embedder(backend="onnx-int8", device="cuda")
    with pytest.raises(EmbeddingError, match="batch_size must be >= 1, got 0"):
        OnnxEmbedder(batch_size=0)


def test_length_size_and_tokenizer_are_known_without_building(tmp_path):
    emb = OnnxEmbedder("all-MiniLM-L6-v2", cache_dir=tmp_path / "cache")
    assert emb.max_seq_length == 256
    assert emb.dimensions == 384
    assert emb.tokenizer.encode("hello world").ids[0] == emb.tokenizer.token_to_id("[CLS]")
    assert not (tmp_path / "cache").exists()  # nothing was built


def test_word_pieces_and_padding_equal_transformers_without_importing_it():
    """The bare Rust tokenizer gives transformers' ids, masks and padding (the vectors
    depend on nothing else), and a fresh process never imports transformers or torch."""
    from retrieval.embedding.onnx_backend import _padded_inputs
    from retrieval.embedding.tokens import load_tokenizer

    emb = OnnxEmbedder("all-MiniLM-L6-v2")
    texts = [*TEXTS, "", "Ünïcödé café — “quotes” 中文 🎉\x0b tabs\t", "word " * 600]
    wrapped = load_tokenizer(emb.path)
    expected = wrapped(texts, truncation=True, max_length=emb.max_seq_length)
    encoded = emb._tokenize(texts)
    assert [e.ids for e in encoded] == expected["input_ids"]
    assert [e.type_ids for e in encoded] == expected["token_type_ids"]
    assert max(len(e.ids) for e in encoded) == emb.max_seq_length  # the long text was cut
    rows = [{k: expected[k][i] for k in expected} for i in range(len(texts))]
    padded = wrapped.pad(rows, padding=True, return_tensors="np")
    ours = _padded_inputs(encoded, emb._pad_ids)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert np.array_equal(ours[name], padded[name]), name

    probe = (
        "import sys\n"
        "from retrieval.embedding.onnx_backend import OnnxEmbedder\n"
        "emb = OnnxEmbedder('all-MiniLM-L6-v2')\n"
        "emb.tokenizer.encode('a chunk'); emb.dimensions\n"
        "print(sorted(m for m in ('transformers', 'torch') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def _fake_model(folder, pooling: dict, modules: list[str]) -> str:
    folder.mkdir()
    (folder / "1_Pooling").mkdir()
    entries = [
        {"idx": i, "name": str(i), "path": "" if i == 0 else f"{i}_{kind}", "type": kind}
        for i, kind in enumerate(f"sentence_transformers.models.{m}" for m in modules)
    ]
    entries[1]["path"] = "1_Pooling"
    (folder / "modules.json").write_text(json.dumps(entries))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (folder / "config.json").write_text(json.dumps({"hidden_size": 8}))
    return str(folder)


def test_models_numpy_pooling_cannot_reproduce_are_refused(tmp_path):
    cls_pooled = _fake_model(
        tmp_path / "cls", {"pooling_mode_cls_token": True}, ["Transformer", "Pooling"]
    )
    with pytest.raises(EmbeddingError, match=r"mean pooling only.*pooling_mode_cls_token"):
        _ = OnnxEmbedder(cls_pooled, cache_dir=tmp_path).max_seq_length
    dense_head = _fake_model(
        tmp_path / "dense",
        {"pooling_mode_mean_tokens": True},
        ["Transformer", "Pooling", "Dense"],
    )
    with pytest.raises(EmbeddingError, match=r"Transformer \+ Pooling.*'Dense'"):
        build_onnx_model(dense_head, "onnx-int8", tmp_path)


def test_build_refuses_unknown_backends_and_non_folders(tmp_path):
    with pytest.raises(EmbeddingError, match="unknown onnx backend 'int4'"):
        build_onnx_model("all-MiniLM-L6-v2", "int4", tmp_path)
    with pytest.raises(EmbeddingError, match="not a folder"):
        build_onnx_model("some-org/not-downloaded", "onnx-int8", tmp_path)


def test_build_folder_is_keyed_by_model_backend_and_format(tmp_path):
    a = build_dir_for("all-MiniLM-L6-v2", "onnx-int8", tmp_path)
    assert a == build_dir_for("sentence-transformers/all-MiniLM-L6-v2", "onnx-int8", tmp_path)
    assert a != build_dir_for("all-MiniLM-L6-v2", "onnx", tmp_path)
    assert a.parent == tmp_path
    assert f"all-MiniLM-L6-v2-onnx-int8-v{FORMAT_VERSION}-" in a.name


def test_a_failed_export_is_an_embedding_error_and_leaves_no_build(tmp_path, monkeypatch):
    import retrieval.embedding.onnx_backend as onnx_module

    def broken_export(model_dir, target):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(onnx_module, "_export", broken_export)
    with pytest.raises(EmbeddingError, match=r"cannot build the onnx-int8 model.*exploded"):
        build_onnx_model("all-MiniLM-L6-v2", "onnx-int8", tmp_path)
    assert list(tmp_path.iterdir()) == []  # the temporary build folder is gone


# --- the real model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8() -> OnnxEmbedder:
    emb = OnnxEmbedder("all-MiniLM-L6-v2", quantize=True)
    emb.warm_up()
    return emb


@pytest.mark.model
def test_int8_vectors_are_unit_length_in_input_order_and_close_to_torch(int8, embedder):
    got = int8.encode_documents(TEXTS)
    want = embedder.encode_documents(TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = (got * want).sum(axis=1)
    assert cosine.min() >= 0.97, cosine  # a one-word text is the most sensitive (0.98)
    assert cosine.mean() >= 0.99, cosine
    # A text's vector depends on the text only (never on the other texts of the
    # call), and input order is kept although texts run longest first.
    single = np.stack([int8.encode_documents([t])[0] for t in TEXTS])
    np.testing.assert_allclose(got, single, atol=1e-5)
    np.testing.assert_allclose(int8.encode_documents(TEXTS[::-1])[::-1], got, atol=1e-5)


@pytest.mark.model
def test_queries_run_in_fp32_documents_in_int8_and_both_are_counted(int8, embedder):
    before = int8.texts_encoded
    text = "how many leave hours can I carry over?"
    query = int8.encode_query(text)
    doc = int8.encode_documents([text])[0]
    assert query.shape == (384,)
    # The query is torch's fp32 vector; the document carries the int8 error.
    np.testing.assert_allclose(query, embedder.encode_query(text), atol=2e-5)
    assert 0.98 <= float(query @ doc) < 0.99999
    assert int8.texts_encoded == before + 2
    assert int8.encode_documents([]).shape == (0, 384)
    with pytest.raises(EmbeddingError, match="not one str"):
        int8.encode_documents("one string")
    with pytest.raises(EmbeddingError, match="one str, got list"):
        int8.encode_query(["a"])


@pytest.mark.model
def test_int8_quantises_every_weight_matmul_and_exports_eager_attention(int8):
    import onnx

    ops = [n.op_type for n in onnx.load(str(int8.onnx_path)).graph.node]
    # Q, K, V, attention output and two feed-forward MatMuls in each of 6 blocks.
    assert ops.count("MatMulInteger") == 6 * 6
    # Eager attention: no NaN guards of the SDPA export in the graph.
    assert "IsNaN" not in ops
    # The fp32 graph for queries is kept beside it.
    assert (int8.onnx_path.parent / QUERY_FILE).is_file()


@pytest.fixture(scope="module")
def general_export(tmp_path_factory) -> object:
    """The fp32 export before any rewrite (an int8 build keeps only the rewritten one)."""
    from retrieval.embedding.onnx_backend import _export

    path = tmp_path_factory.mktemp("export") / "general.onnx"
    _export(Path(resolve_model_path("all-MiniLM-L6-v2")), path)
    return path


@pytest.mark.model
def test_the_single_text_graph_equals_the_export_and_reads_word_pieces_only(int8, general_export):
    """Both graphs of an int8 build are rewritten for one unpadded text per run; in fp32
    the rewrite computes what the export computes, and a batch of two is refused."""
    import onnx
    import onnxruntime as ort

    from retrieval.embedding.onnx_graph import single_text_graph

    rewritten = single_text_graph(onnx.load(str(general_export)))
    onnx.checker.check_model(rewritten)
    cpu = ["CPUExecutionProvider"]
    general = ort.InferenceSession(str(general_export), providers=cpu)
    single = ort.InferenceSession(rewritten.SerializeToString(), providers=cpu)
    for built in (int8.onnx_path, int8.onnx_path.parent / QUERY_FILE):
        graph = ort.InferenceSession(str(built), providers=cpu)
        assert [i.name for i in graph.get_inputs()] == ["input_ids"], built.name
    assert [i.name for i in single.get_inputs()] == ["input_ids"]
    for text in TEXTS:
        ids = np.array([int8.tokenizer.encode(text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        feeds["token_type_ids"] = np.zeros_like(ids)
        (want,) = general.run(None, feeds)
        (got,) = single.run(None, {"input_ids": ids})
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4)
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime raises its own Fail type
        single.run(None, {"input_ids": np.zeros((2, 5), dtype=np.int64)})


@pytest.mark.model
def test_an_export_of_another_layout_keeps_the_general_graphs(
    general_export, tmp_path, monkeypatch
):
    import onnx

    import retrieval.embedding.onnx_graph as single_text
    from retrieval.embedding.onnx_backend import _quantize, _single_text

    with pytest.raises(single_text.UnsupportedGraph, match="no attention Softmax"):
        single_text.single_text_graph(
            onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
        )

    def unknown_layout(model):
        raise single_text.UnsupportedGraph("not the eager export")

    monkeypatch.setattr(single_text, "single_text_graph", unknown_layout)
    fp32 = tmp_path / QUERY_FILE
    shutil.copyfile(general_export, fp32)
    _single_text(fp32)
    _quantize(fp32, tmp_path / "model.onnx")
    inputs = ["input_ids", "attention_mask", "token_type_ids"]
    for name in (QUERY_FILE, "model.onnx"):
        assert [i.name for i in onnx.load(str(tmp_path / name)).graph.input] == inputs
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert [n.op_type for n in graph.node].count("MatMulInteger") == 6 * 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", QUERY_FILE]


@pytest.mark.model
def test_threads_share_the_model_runs_without_changing_a_vector(int8):
    import threading

    long_texts = [f"{i} " + TEXTS[4] for i in range(48)]
    alone = int8.encode_documents(long_texts)
    query_alone = int8.encode_query("carry over leave")
    results: dict[str, np.ndarray] = {}

    def batch(name: str) -> None:
        results[name] = int8.encode_documents(long_texts)

    threads = [threading.Thread(target=batch, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    # Runs take a slot each, not the whole batch: a query gets in while both
    # batches are still running (48 long texts each, seconds; a run is ms).
    query = int8.encode_query("carry over leave")
    assert any(t.is_alive() for t in threads)
    for t in threads:
        t.join()
    np.testing.assert_array_equal(query, query_alone)
    np.testing.assert_array_equal(results["a"], alone)
    np.testing.assert_array_equal(results["b"], alone)


@pytest.mark.model
def test_a_query_only_process_loads_only_the_query_graph(int8):
    server = OnnxEmbedder("all-MiniLM-L6-v2", quantize=True)
    assert not server.query_ready
    server.warm_up_queries()
    assert server.query_ready
    np.testing.assert_array_equal(server.encode_query("leave"), int8.encode_query("leave"))
    assert server._loaded is None  # the int8 documents' graph (59 MB) was never loaded


@pytest.mark.model
def test_second_embedder_loads_the_cached_build(int8):
    again = OnnxEmbedder("all-MiniLM-L6-v2", quantize=True, cache_dir=default_cache_dir())
    again.warm_up()
    assert again.build_seconds == 0.0
    assert again.onnx_path == int8.onnx_path


@pytest.mark.slow
@pytest.mark.model
def test_build_from_packaged_weights_is_atomic_and_cached(tmp_path):
    path, seconds = build_onnx_model("all-MiniLM-L6-v2", "onnx-int8", tmp_path)
    assert seconds > 0 and path.is_file()
    assert path.parent == build_dir_for("all-MiniLM-L6-v2", "onnx-int8", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [path.parent.name]  # no temporary leftovers
    assert json.loads((path.parent / "build.json").read_text())["backend"] == "onnx-int8"
    assert build_onnx_model("all-MiniLM-L6-v2", "onnx-int8", tmp_path) == (path, 0.0)
    # The weights came from the packaged model, not a download.
    assert resolve_model_path("all-MiniLM-L6-v2").endswith("model")
    shutil.rmtree(path.parent)


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.corpus
def test_int8_is_at_least_2_5x_torch_with_cosine_0_99_on_real_chunks(shared_corpora):
    from trove.bench.embed import compare, sample_chunks

    texts = sample_chunks(256, shared_corpora / "18f-handbook")
    assert len(texts) == 256
    result = compare(texts, backends=("torch", "onnx-int8"), repeats=3)["backends"]
    print(json.dumps(result))
    assert result["onnx-int8"]["cosine_mean"] >= 0.99
    assert result["onnx-int8"]["speedup_vs_torch"] >= 2.5


# --- a quiet build (issue 21) -------------------------------------------------------------


def test_quiet_build_drops_only_the_known_export_noise(caplog):
    import logging
    import warnings

    import torch

    from retrieval.embedding.onnx_backend import quiet_build

    root = logging.getLogger()
    handlers_before = list(root.handlers)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_build():
            warnings.warn(
                "Converting a tensor to a Python boolean", torch.jit.TracerWarning, stacklevel=1
            )
            warnings.warn(
                "You are using the legacy TorchScript-based ONNX export.",
                DeprecationWarning,
                stacklevel=1,
            )
            warnings.warn(
                "Exporting aten::index operator of advanced indexing", UserWarning, stacklevel=1
            )
            warnings.warn("an unrelated problem the user must see", UserWarning, stacklevel=1)
            # onnxruntime.quantization logs its advice on the root logger, like this:
            logging.warning("Please consider to run pre-processing before quantization.")
            logging.warning("a real quantisation problem")
        warnings.warn("after the build", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == [
        "an unrelated problem the user must see",
        "after the build",
    ]
    assert "a real quantisation problem" in caplog.text
    assert "pre-processing" not in caplog.text
    # Nothing left behind on the caller's root logger (no basicConfig side effect).
    assert root.handlers == handlers_before and not root.filters


@pytest.mark.model
def test_first_build_prints_one_line_and_no_warnings(tmp_path):
    """A fresh process building into an empty cache, DeprecationWarnings shown as in
    __main__: stderr is the one 'Preparing ...' line, whatever torch/onnx say."""
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from retrieval.embedding.onnx_backend import build_onnx_model\n"
        "path, seconds = build_onnx_model('all-MiniLM-L6-v2', 'onnx-int8', Path(sys.argv[1]))\n"
        "print(seconds > 0 and path.is_file())\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", probe, str(tmp_path / "models")],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    assert result.stdout.strip() == "True"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(
        r"Preparing the embedding model for ONNX Runtime \(once, cached in "
        + re.escape(str(tmp_path / "models"))
        + r"\)\.\.\. done in \d+\.\d s",
        lines[0],
    ), lines[0]
