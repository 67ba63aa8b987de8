"""torch's int8 kernel on each CPU path torch can take here, each in its own child process.

``ATEN_CPU_CAPABILITY`` picks torch's kernels at import: ``default`` (plain C++) runs
anywhere, ``avx2`` on any x86-64 with AVX2, ``avx512`` only where the CPU has it. For
each, a child runs the probe's check (int8_probe.py) on small shapes, then the dense
first pass with that kernel and a full dense search, which must equal brute force. The
children run side by side (each pays a torch import). The crash from the report is
reproduced too, through the probe, which must survive it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from retrieval.index.embedded import int8_kernel

REPO_ROOT = Path(__file__).resolve().parents[2]
X86 = platform.machine().lower() in ("x86_64", "amd64")
FLAGS = set(int8_kernel.cpu_flags())
# The capability, and the /proc/cpuinfo flag without which torch cannot take that path.
PATHS = {"default": None, "avx2": "avx2", "avx512": "avx512f"}
TIMEOUT_S = 300

CHILD = r"""
import json
import numpy as np
from retrieval.index.base import WriteBatch
from retrieval.index.embedded import EmbeddedIndex, int8_kernel, int8_probe, quantized, ranking
from tests.retrieval.builders import record
from core.acl import Acl, Principal

DIM = 384
# In this child only: a kernel that crashes here takes this test child down, nothing else.
found = int8_probe.check(DIM, [4, 8, 1024], [0, 16])
out = {**found, "calls": [], "violations": None, "same_top_k": None}
if found["verified"]:
    import torch

    op = torch.ops.aten._weight_int8pack_mm
    int8_kernel._kernels[DIM] = int8_kernel.Int8Kernel(torch=torch, op=op, dimensions=DIM)
    original = int8_kernel.Int8Kernel.scores

    def counted(self, q16, codes, scale):
        out["calls"].append(int(codes.shape[0]))
        return original(self, q16, codes, scale)

    int8_kernel.Int8Kernel.scores = counted
    quantized.SPLIT_MIN_ROWS = 1000  # both halves of a split pass
    ranking.QUANTIZED_MIN_ROWS = 0
    rng = np.random.default_rng(8)
    n = 2003  # not whole blocks of 4: the last rows go to numpy
    centres = rng.normal(size=(20, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 20, n)] + rng.normal(scale=0.05, size=(n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    qv = quantized.QuantizedVectors(*quantized.quantize(x))
    acl = Acl(allow_groups=frozenset({"staff"}))
    reader = Principal.of("reader", ["staff"])
    ix = EmbeddedIndex.open(__import__("sys").argv[1], create=True, dimensions=DIM)
    ix.apply(WriteBatch(upserts=[record(f"d{i}", 0, "t", acl, vector=v) for i, v in enumerate(x)]))
    violations, same = 0, True
    for i in range(8):
        q = x[i * 211] + rng.normal(scale=0.1, size=DIM).astype(np.float32)
        q /= np.linalg.norm(q)
        first = qv.first_pass(q, np.ones(n, dtype=bool), 10)
        exact = x.astype(np.float64) @ q.astype(np.float64)
        bound = qv.error_bounds(first.scores, np.arange(n), first.query_error)
        violations += int(np.sum(~(np.abs(exact - first.scores) <= bound)))
        got = [h.chunk_id for h in ix.search_dense(q, reader, 10)]
        # Ties in float32 would make the order ambiguous; the clustered rows have none here.
        expected = [f"d{j}#0" for j in np.argsort(-(x @ q), kind="stable")[:10]]
        same = same and got == expected
    out["violations"], out["same_top_k"] = violations, same
print(json.dumps(out))
"""


def _skip_reason(capability: str) -> str | None:
    flag = PATHS[capability]
    if flag is not None and not X86:
        return f"ATEN_CPU_CAPABILITY={capability} is an x86-64 path; this is {platform.machine()}"
    if flag is not None and flag not in FLAGS:
        return f"/proc/cpuinfo shows no {flag}: torch cannot take its {capability} path here"
    return None


def _env(capability: str, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != int8_kernel.SETTING_ENV}
    return {**env, "ATEN_CPU_CAPABILITY": capability, "XDG_CACHE_HOME": str(tmp / "cache")}


@pytest.fixture(scope="module")
def children(tmp_path_factory) -> dict[str, Any]:
    """Every child's result, keyed by capability, plus ``crash``: the reported shape's
    verdict on the AVX-512 path (None where the CPU has no AVX-512)."""
    pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("cpu-paths")
    running = {
        cap: subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp / f"index-{cap}")],
            cwd=REPO_ROOT,
            env=_env(cap, tmp),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cap in PATHS
        if _skip_reason(cap) is None
    }
    with ThreadPoolExecutor(1) as pool:
        crash = None
        if _skip_reason("avx512") is None:
            # The report's probe: 1 query row, 8 columns, 2 rows.
            crash = pool.submit(
                int8_kernel.run_probe,
                8,
                rows=(2,),
                offsets=(0,),
                timeout_s=TIMEOUT_S,
                env=_env("avx512", tmp),
            )
        results: dict[str, Any] = {}
        for cap, child in running.items():
            stdout, stderr = child.communicate(timeout=TIMEOUT_S)
            assert child.returncode == 0, f"{cap}: exit {child.returncode}: {stderr[-3000:]}"
            results[cap] = json.loads(stdout.strip().splitlines()[-1])
        results["crash"] = crash.result() if crash is not None else None
    return results


@pytest.mark.parametrize("capability", list(PATHS))
def test_the_first_pass_is_exact_on_each_cpu_path(children, capability):
    reason = _skip_reason(capability)
    if reason:
        pytest.skip(reason)
    result = children[capability]
    assert result["capability"] == capability.upper()  # torch really took that path
    assert result["verified"], result["reason"]
    assert result["calls"] and all(rows % int8_kernel.ROW_BLOCK == 0 for rows in result["calls"])
    assert result["violations"] == 0
    assert result["same_top_k"]


def test_the_reported_avx512_crash_stays_in_the_probe(children):
    """On AVX-512, 8 columns and 2 rows segfaulted the process that ran it (issue 16):
    through the probe, the caller gets a verdict instead."""
    reason = _skip_reason("avx512")
    if reason:
        pytest.skip(reason)
    verdict = children["crash"]
    if verdict.verified:
        pytest.skip(f"torch {verdict.torch}'s AVX-512 kernel handles 8 columns now")
    assert "SIGSEGV" in verdict.reason or "scored nan" in verdict.reason, verdict.reason
    assert verdict.capability in ("", "AVX512")  # a crashed child reports nothing
