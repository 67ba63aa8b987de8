"""Checks torch's ``aten._weight_int8pack_mm`` in the process that runs this file.

:mod:`retrieval.index.embedded.int8_kernel` runs it as a child process
(``python -P int8_probe.py '<spec json>'``) before the serving process may call
the op: a kernel that segfaults kills this process, not the server. It imports
nothing from Trove (it runs by path, outside the package), only numpy and torch.

The spec names the shapes production uses: one bfloat16 query row of
``dimensions`` values against ``rows`` int8 rows (multiples of the kernel's
block of 4 rows), with per-row bfloat16 scales. Each is run with the codes'
first byte at each of ``offsets`` (bytes past a 64-byte boundary), on one thread
and on torch's default count, inside buffers poisoned past their end (NaN after
the query, 127 after the codes), so a kernel that reads past a row or a buffer
gives a wrong score instead of a lucky one. A result must stay within the
kernel-rounding part of the first pass's error bound (quantized.py):
``|K - s| <= 2**-7 |K| + 2**-12``, with ``s`` the exact dot product of the
bfloat16 query and the scaled int8 row. Prints one JSON line:
``{"verified": bool, "reason": str, "torch": str, "capability": str}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

KERNEL_REL = 2.0**-7
KERNEL_ABS = 2.0**-12
_ALIGN = 64
_PAD = 64
_POISON_CODE = 127


def capability_of(torch: Any) -> str:
    """The CPU path torch dispatches to here (``DEFAULT``, ``AVX2``, ``AVX512``, ...)."""
    get = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return str(get()) if get is not None else "unknown"


def _problem(rng: np.random.Generator, rows: int, dims: int, torch: Any) -> tuple[Any, ...]:
    """Unit rows quantised as quantized.py does, a unit query, and the exact scores."""
    x = rng.standard_normal((rows, dims), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scale16 = torch.from_numpy(np.abs(x).max(axis=1) / 127.0).to(torch.bfloat16)
    scale = scale16.float().numpy()
    codes = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
    q = rng.standard_normal(dims).astype(np.float32)
    q16 = torch.from_numpy(q / np.linalg.norm(q)).to(torch.bfloat16)
    exact = (codes.astype(np.float64) @ q16.double().numpy()) * scale.astype(np.float64)
    return codes, scale16, q16, exact


def _poisoned_query(q16: Any, torch: Any) -> Any:
    buf = torch.full((len(q16) + _PAD,), float("nan"), dtype=torch.bfloat16)
    buf[: len(q16)] = q16
    return buf[: len(q16)].view(1, len(q16))


def _poisoned_codes(codes: np.ndarray, offset: int) -> np.ndarray:
    """A copy of ``codes`` starting ``offset`` bytes past a 64-byte boundary."""
    buf = np.full(codes.size + 2 * _ALIGN + _PAD, _POISON_CODE, dtype=np.int8)
    start = (-buf.ctypes.data) % _ALIGN + offset
    placed = buf[start : start + codes.size].reshape(codes.shape)
    placed[...] = codes
    return placed


def check(dimensions: int, rows: list[int], offsets: list[int]) -> dict[str, Any]:
    """Run every case; the first that fails (or raises) decides the verdict."""
    try:
        import torch
    except Exception as exc:  # any import failure means: no kernel here
        return {"verified": False, "reason": f"torch does not import: {exc!r}"}
    facts = {"torch": str(torch.__version__), "capability": capability_of(torch)}
    try:
        op = torch.ops.aten._weight_int8pack_mm
    except (AttributeError, RuntimeError) as exc:
        return {**facts, "verified": False, "reason": f"torch has no _weight_int8pack_mm: {exc}"}
    rng = np.random.default_rng(20_240_501)
    threads = sorted({1, int(torch.get_num_threads())})
    worst = 0.0
    for n in rows:
        codes, scale16, q16, exact = _problem(rng, n, dimensions, torch)
        query = _poisoned_query(q16, torch)
        for offset in offsets:
            b = torch.from_numpy(_poisoned_codes(codes, offset))
            for count in threads:
                torch.set_num_threads(count)
                case = f"{n} rows x {dimensions}, codes at +{offset} bytes, {count} thread(s)"
                try:
                    got = op(query, b, scale16)
                except Exception as exc:  # a refusal is a verdict, not a crash
                    return {**facts, "verified": False, "reason": f"{case}: raised {exc!r}"}
                if tuple(got.shape) != (1, n):
                    return {**facts, "verified": False, "reason": f"{case}: shape {got.shape}"}
                k = got[0].double().numpy()
                bound = KERNEL_REL * np.abs(k) + KERNEL_ABS
                err = np.abs(k - exact)
                if not np.all(err <= bound):  # NaN fails too
                    bad = int(np.argmax(np.where(np.isnan(err), np.inf, err - bound)))
                    wrong = f"row {bad} scored {float(k[bad])!r}, exact {float(exact[bad])!r}"
                    return {**facts, "verified": False, "reason": f"{case}: {wrong}"}
                worst = max(worst, float(np.max(err / bound)))
    return {
        **facts,
        "verified": True,
        "reason": f"{len(rows)} row counts x {len(offsets)} alignments x {threads} threads "
        f"within the bound (worst error {worst:.2f} of it)",
    }


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    result = check(int(spec["dimensions"]), list(spec["rows"]), list(spec["offsets"]))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
