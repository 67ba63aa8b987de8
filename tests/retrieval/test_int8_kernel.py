"""int8_kernel.py: torch's private int8 op is verified in a child process, never in the
process that serves queries. A probe that crashes, hangs, fails or disagrees means the
numpy first pass; verdicts are cached on disk (atomic, re-probed when unreadable); a
setting forces numpy without probing or importing torch.

These tests swap the probe script for small fakes: they run in a child without torch,
so they take milliseconds. The real kernel on each CPU path is checked by
test_int8_kernel_cpu_paths.py."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pydantic
import pytest

from core.acl import Acl, Principal
from retrieval.index.base import WriteBatch
from retrieval.index.config import IndexConfig
from retrieval.index.embedded import EmbeddedIndex, int8_kernel, ranking
from retrieval.index.factory import open_index
from tests.retrieval.builders import record

DIM = 384
READER = Principal.of("reader", ["staff"])


@pytest.fixture
def fresh(tmp_path, monkeypatch) -> Path:
    """No verdict in this process, an empty cache; returns the file each probe run logs to."""
    monkeypatch.setattr(int8_kernel, "_kernels", {})
    monkeypatch.setattr(int8_kernel, "_verdicts", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(int8_kernel.SETTING_ENV, raising=False)
    return tmp_path / "probe-runs.log"


def _fake_probe(tmp_path: Path, monkeypatch, runs: Path, body: str) -> None:
    """Make ``body`` the probe: it logs each run to ``runs`` first."""
    script = tmp_path / "fake_probe.py"
    script.write_text(f"with open({str(runs)!r}, 'a') as log:\n    log.write('run\\n')\n{body}\n")
    monkeypatch.setattr(int8_kernel, "PROBE_SCRIPT", script)


def _runs(runs: Path) -> int:
    return runs.read_text().count("run") if runs.exists() else 0


def _cache_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "cache" / "trove" / "kernels"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _answer(verified: bool, reason: str, **facts: str) -> str:
    return f"print({json.dumps({'verified': verified, 'reason': reason, **facts})!r})"


def test_a_probe_that_segfaults_means_numpy_and_the_caller_lives(tmp_path, monkeypatch, fresh):
    """The reported crash: the kernel segfaulted inside the serving process. Now the
    probe's child dies, this process answers with numpy, and the verdict is kept."""
    _fake_probe(tmp_path, monkeypatch, fresh, "import os, signal\nos.kill(os.getpid(), 11)")
    assert int8_kernel.select(DIM) is None
    verdict = int8_kernel.last_verdict(DIM)
    assert verdict is not None and not verdict.verified
    assert "SIGSEGV" in verdict.reason and not verdict.cached
    assert _runs(fresh) == 1 and len(_cache_files(tmp_path)) == 1

    # The next process reads the verdict instead of crashing another child.
    monkeypatch.setattr(int8_kernel, "_kernels", {})
    assert int8_kernel.select(DIM) is None
    assert int8_kernel.last_verdict(DIM).cached
    assert _runs(fresh) == 1


def test_dense_search_stays_exact_after_a_crashed_probe(tmp_path, monkeypatch, fresh):
    _fake_probe(tmp_path, monkeypatch, fresh, "import os\nos.abort()")
    monkeypatch.setattr(ranking, "QUANTIZED_MIN_ROWS", 0)
    rng = np.random.default_rng(21)
    vectors = rng.normal(size=(300, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    acl = Acl(allow_groups=frozenset({"staff"}))
    records = [record(f"d{i}", 0, "t", acl, vector=v) for i, v in enumerate(vectors)]
    with EmbeddedIndex.open(tmp_path / "ix", create=True, dimensions=DIM) as ix:
        ix.apply(WriteBatch(upserts=records))
        q = vectors[7]
        got = [h.chunk_id for h in ix.search_dense(q, READER, 5)]
    assert got == [f"d{i}#0" for i in np.argsort(-(vectors @ q), kind="stable")[:5]]
    assert "SIGABRT" in int8_kernel.last_verdict(DIM).reason and _runs(fresh) == 1


def test_a_probe_that_hangs_times_out_and_is_not_cached(tmp_path, monkeypatch, fresh):
    _fake_probe(tmp_path, monkeypatch, fresh, "import time\ntime.sleep(60)")
    verdict = int8_kernel.verdict_for(DIM, timeout_s=0.5)
    assert not verdict.verified and "timed out" in verdict.reason
    assert _cache_files(tmp_path) == []  # a busy machine is not a broken kernel


@pytest.mark.parametrize(
    "body",
    [
        "raise SystemExit(3)",  # the probe itself failed: nothing known about the kernel
        "print('not json')",
        'print(\'{"verified": "yes", "reason": 1}\')',
    ],
)
def test_a_probe_without_a_verdict_means_numpy_uncached(tmp_path, monkeypatch, fresh, body):
    _fake_probe(tmp_path, monkeypatch, fresh, body)
    verdict = int8_kernel.verdict_for(DIM)
    assert not verdict.verified and "the probe failed" in verdict.reason
    assert _cache_files(tmp_path) == []


def test_a_disagreeing_kernel_is_cached_as_numpy(tmp_path, monkeypatch, fresh):
    _fake_probe(tmp_path, monkeypatch, fresh, _answer(False, "row 3 scored nan"))
    verdict = int8_kernel.verdict_for(DIM)
    assert (verdict.verified, verdict.reason) == (False, "row 3 scored nan")
    (cached,) = _cache_files(tmp_path)
    assert json.loads(cached.read_text())["key"] == int8_kernel.probe_key(DIM)
    assert int8_kernel.verdict_for(DIM).cached and _runs(fresh) == 1


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # torn
        lambda text: "",
        lambda text: text.replace('"verified": false', '"verified": "maybe"'),
        lambda text: text.replace(f'"dimensions": {DIM}', '"dimensions": 768'),  # another key
    ],
)
def test_an_unusable_cache_file_is_probed_again(tmp_path, monkeypatch, fresh, damage):
    _fake_probe(tmp_path, monkeypatch, fresh, _answer(False, "says no"))
    int8_kernel.verdict_for(DIM)
    (path,) = _cache_files(tmp_path)
    path.write_text(damage(path.read_text()))
    verdict = int8_kernel.verdict_for(DIM)
    assert not verdict.cached and _runs(fresh) == 2
    record = json.loads(path.read_text())  # rewritten whole
    assert record["key"] == int8_kernel.probe_key(DIM) and record["verified"] is False
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_an_unwritable_cache_only_costs_a_probe_per_process(tmp_path, monkeypatch, fresh):
    _fake_probe(tmp_path, monkeypatch, fresh, _answer(False, "says no"))
    (tmp_path / "cache").write_text("a file where the cache folder would be")
    assert int8_kernel.select(DIM) is None and int8_kernel.select(DIM) is None
    assert _runs(fresh) == 1  # remembered in this process


def test_the_key_names_torch_its_cpu_path_and_the_dimension(monkeypatch):
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    key = int8_kernel.probe_key(DIM)
    assert key["dimensions"] == DIM and key["torch"] and key["op"] == int8_kernel.PRIVATE_OP
    if Path("/proc/cpuinfo").exists() and "avx2" in Path("/proc/cpuinfo").read_text():
        assert "avx2" in key["cpu_flags"]
    assert int8_kernel.probe_key(768) != key
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert int8_kernel.probe_key(DIM)["aten_cpu_capability"] == "avx2"
    assert int8_kernel._cache_file(int8_kernel.probe_key(DIM)) != int8_kernel._cache_file(key)


@pytest.mark.parametrize("dimensions", [8, 100, 390])
def test_dimensions_the_kernel_reads_past_are_never_probed(
    tmp_path, monkeypatch, fresh, dimensions
):
    _fake_probe(tmp_path, monkeypatch, fresh, _answer(True, "would say yes"))
    assert int8_kernel.select(dimensions) is None
    assert "not a multiple of 16" in int8_kernel.last_verdict(dimensions).reason
    assert _runs(fresh) == 0


def test_a_verdict_for_another_torch_or_cpu_path_is_not_used(tmp_path, monkeypatch, fresh):
    """The child verified what this process would not run (the environment changed
    after this process imported torch, say): numpy."""
    pytest.importorskip("torch")
    answer = _answer(True, "fine there", torch="0.0.1", capability="ELSEWHERE")
    _fake_probe(tmp_path, monkeypatch, fresh, answer)
    assert int8_kernel.select(DIM) is None
    reason = int8_kernel.last_verdict(DIM).reason
    assert "verified for torch 0.0.1 on ELSEWHERE" in reason


def test_numpy_setting_never_probes(tmp_path, monkeypatch, fresh):
    _fake_probe(tmp_path, monkeypatch, fresh, _answer(True, "would say yes"))
    assert int8_kernel.select(DIM, "numpy") is None
    monkeypatch.setenv(int8_kernel.SETTING_ENV, "numpy")
    with EmbeddedIndex.open(tmp_path / "ix", create=True, dimensions=DIM) as ix:
        assert ix.dense_kernel == "numpy"
        monkeypatch.setattr(ranking, "QUANTIZED_MIN_ROWS", 0)
        acl = Acl(allow_groups=frozenset({"staff"}))
        rng = np.random.default_rng(2)
        vectors = rng.normal(size=(200, DIM)).astype(np.float32)
        ix.apply(
            WriteBatch(
                upserts=[record(f"d{i}", 0, "t", acl, vector=v) for i, v in enumerate(vectors)]
            )
        )
        ix.warm_up()
        assert len(ix.search_dense(vectors[0], READER, 3)) == 3
    assert _runs(fresh) == 0 and int8_kernel.last_verdict(DIM) is None


def test_the_setting_comes_from_the_argument_the_environment_or_auto(monkeypatch):
    monkeypatch.delenv(int8_kernel.SETTING_ENV, raising=False)
    assert int8_kernel.resolve_setting(None) == "auto"
    monkeypatch.setenv(int8_kernel.SETTING_ENV, " NumPy ")
    assert int8_kernel.resolve_setting(None) == "numpy"
    assert int8_kernel.resolve_setting("auto") == "auto"  # an explicit value wins
    monkeypatch.setenv(int8_kernel.SETTING_ENV, "gpu")
    with pytest.raises(ValueError, match="dense_kernel must be one of auto, numpy"):
        int8_kernel.resolve_setting(None)
    with pytest.raises(ValueError, match="got 'torch'"):
        int8_kernel.resolve_setting("torch")


def test_the_config_key_reaches_the_embedded_index(tmp_path, monkeypatch):
    monkeypatch.delenv(int8_kernel.SETTING_ENV, raising=False)
    assert IndexConfig().dense_kernel == "auto"
    with pytest.raises(pydantic.ValidationError):
        IndexConfig(dense_kernel="torch")
    config = IndexConfig(path=tmp_path / "ix", dense_kernel="numpy")
    with open_index(config, create=True, dimensions=DIM) as ix:
        assert ix.dense_kernel == "numpy"
    with open_index(IndexConfig(path=tmp_path / "ix")) as ix:
        assert ix.dense_kernel == "auto"


def test_the_probe_runs_in_another_interpreter_process(tmp_path, monkeypatch, fresh):
    """Its child is this interpreter, by path, without the package folder on sys.path."""
    body = (
        "import json, os, sys\n"
        "print(json.dumps({'verified': False, 'reason': json.dumps("
        "[os.getpid(), sys.executable, sys.path[0]])}))"
    )
    _fake_probe(tmp_path, monkeypatch, fresh, body)
    pid, executable, first_path = json.loads(int8_kernel.verdict_for(DIM).reason)
    assert pid != os.getpid() and executable == sys.executable
    assert first_path != str(tmp_path)  # -P: the script's folder is not importable
