"""torch's int8 kernel for the dense first pass, called only on shapes a child process verified.

The first pass (quantized.py) scores int8 rows with ``aten._weight_int8pack_mm``,
a private torch op (no stability promise, not in torch's documented API), because
it is several times faster than numpy here
(docs/benchmarks.md#measured-alternatives-dense-first-pass). Its CPU kernels are
specialised per instruction set, and they are not safe for every shape: with
torch 2.13's AVX-512 kernel, a block of 1-3 rows whose codes are not 16-byte
aligned segfaults (aligned loads), and an inner dimension that is not a multiple
of 16 reads past each row (wrong scores). A segfault kills the process that
serves queries, so that process never runs a shape that was not verified first:

* **Verified in a child.** :func:`verdict_for` runs ``int8_probe.py`` with
  ``sys.executable`` on the shapes production uses (the index's dimension, row
  counts up to a split half of a large segment, each alignment production can
  hand it) and compares every score with the exact one, within the bound the
  first pass relies on. A child that crashes, times out, fails or disagrees
  means numpy's first pass (slower, as exact).
* **Cached on disk** under ``$XDG_CACHE_HOME/trove/kernels`` (default
  ``~/.cache``), keyed by torch's version, ``ATEN_CPU_CAPABILITY``, the CPU's
  SIMD flags and the dimension: a restart does not pay the probe again. The
  file is replaced atomically; one that cannot be read is probed again. A
  timeout is not cached (a busy machine is not a broken kernel).
* **Calls stay inside what was verified**: one query row of the verified
  dimension, codes 16-byte aligned and contiguous, rows in whole blocks of 4
  (:data:`ROW_BLOCK`, the kernel's block; the last 1-3 rows of a range are
  scored in numpy). Anything else is scored in numpy (:meth:`Int8Kernel.scores`).

``index.dense_kernel: numpy`` (or ``TROVE_INDEX__DENSE_KERNEL=numpy``) skips all
of it: torch is then never imported for the index. See docs/dense-kernel.md.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.index.embedded.int8_probe import capability_of

log = logging.getLogger(__name__)

SETTINGS = ("auto", "numpy")
"""``auto``: torch's kernel where verified, else numpy. ``numpy``: never torch."""
SETTING_ENV = "TROVE_INDEX__DENSE_KERNEL"
PRIVATE_OP = "aten._weight_int8pack_mm"
PROBE_SCRIPT = Path(__file__).with_name("int8_probe.py")
# Bump when the probe checks something new: older verdicts are then ignored.
PROBE_VERSION = 1
PROBE_TIMEOUT_S = 120.0
# The kernel works on blocks of 4 rows; production calls use whole blocks only.
ROW_BLOCK = 4
# AVX-512 reads the inner dimension 16 values at a time without a tail (8 on AVX2).
DIMENSION_MULTIPLE = 16
# Codes as production hands them: .npy data starts 64-byte aligned, and a range
# starts a whole number of rows later; in-memory copies are at least 16-aligned.
CODES_ALIGNMENT = 16
QUERY_ALIGNMENT = 64  # a fresh torch tensor (the AVX-512 kernel loads it aligned)
PROBE_ROWS = (4, 8, 1_024, 50_000)  # 50k: a split half of a 100k-row segment
PROBE_OFFSETS = (0, 16, 32)
_SIMD_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c", "sse", "asimd", "sve", "bf16", "i8mm")


@dataclass(frozen=True)
class Verdict:
    """Whether the kernel may run here for one dimension, and why."""

    verified: bool
    reason: str
    torch: str = ""
    capability: str = ""
    """torch's CPU path in the child (``DEFAULT``, ``AVX2``, ``AVX512``, ...)."""
    cacheable: bool = True
    """False for outcomes that say nothing about the kernel (a timeout, no interpreter)."""
    cached: bool = False


def resolve_setting(value: str | None) -> str:
    """``value``, else ``$TROVE_INDEX__DENSE_KERNEL``, else ``auto``; checked."""
    raw = value if value is not None else os.environ.get(SETTING_ENV) or "auto"
    setting = raw.strip().lower()
    if setting not in SETTINGS:
        raise ValueError(f"dense_kernel must be one of {', '.join(SETTINGS)}, got {raw!r}")
    return setting


def cpu_flags() -> list[str]:
    """The SIMD flags of this CPU that select torch's kernels (empty where unknown)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return sorted({f for f in value.split() if f.startswith(_SIMD_FLAG_PREFIXES)})
    return []


def torch_build() -> str:
    """torch's version and commit, read without importing it (the import takes seconds).

    :raises importlib.metadata.PackageNotFoundError: torch is not installed.
    """
    version = importlib.metadata.version("torch")  # no local label (+cpu, +cu130)
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            text = (Path(folder) / "version.py").read_text(encoding="utf-8")
        except OSError:
            continue
        found = dict(re.findall(r"^(__version__|git_version)\s*=\s*'([^']*)'", text, re.M))
        if "__version__" in found:
            return f"{found['__version__']} {found.get('git_version', '')}".strip()
    return version


def probe_key(dimensions: int) -> dict[str, Any]:
    """What a verdict depends on. :raises importlib.metadata.PackageNotFoundError: no torch."""
    return {
        "probe": PROBE_VERSION,
        "op": PRIVATE_OP,
        "torch": torch_build(),
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY", ""),
        "machine": platform.machine(),
        "cpu_flags": cpu_flags(),
        "dimensions": dimensions,
        "rows": list(PROBE_ROWS),
        "offsets": list(PROBE_OFFSETS),
    }


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trove" / "kernels"


def _cache_file(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / f"int8pack-{digest}.json"


def _read_cache(key: dict[str, Any]) -> Verdict | None:
    """The cached verdict for ``key``; None when absent, unreadable or for another key."""
    path = _cache_file(key)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record["key"] != key:
            return None
        return Verdict(
            verified=_typed(record["verified"], bool),
            reason=_typed(record["reason"], str),
            torch=_typed(record["torch"], str),
            capability=_typed(record["capability"], str),
            cached=True,
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.info("probing the int8 kernel again: cannot use %s (%s)", path, exc)
        return None


def _typed(value: Any, kind: type) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__}, got {value!r}")
    return value


def _write_cache(key: dict[str, Any], verdict: Verdict) -> None:
    """Atomically (a reader sees the old file or the new one); a failure only logs."""
    path = _cache_file(key)
    record = {
        "key": key,
        "verified": verdict.verified,
        "reason": verdict.reason,
        "torch": verdict.torch,
        "capability": verdict.capability,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".int8pack-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.warning("cannot cache the int8 kernel's verdict in %s: %s", path.parent, exc)


def run_probe(
    dimensions: int,
    *,
    rows: tuple[int, ...] = PROBE_ROWS,
    offsets: tuple[int, ...] = PROBE_OFFSETS,
    timeout_s: float = PROBE_TIMEOUT_S,
    env: dict[str, str] | None = None,
) -> Verdict:
    """Run ``int8_probe.py`` in a child process and read its verdict; never raises for
    anything the child does."""
    if not sys.executable:
        return Verdict(False, "no Python interpreter to run the probe in", cacheable=False)
    spec = json.dumps({"dimensions": dimensions, "rows": list(rows), "offsets": list(offsets)})
    # -P: the script's folder (this package's modules) must not shadow other modules.
    command = [sys.executable, "-P", str(PROBE_SCRIPT), spec]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Verdict(False, f"the probe timed out after {timeout_s:g} s", cacheable=False)
    except OSError as exc:
        return Verdict(False, f"the probe did not start: {exc}", cacheable=False)
    return _verdict_of(done)


def _verdict_of(done: subprocess.CompletedProcess[str]) -> Verdict:
    if done.returncode < 0:
        sig = -done.returncode
        name = signal.Signals(sig).name if sig in signal.valid_signals() else f"signal {sig}"
        # SIGKILL is the OOM killer's or an operator's, not the kernel's doing.
        return Verdict(False, f"the probe crashed ({name})", cacheable=sig != signal.SIGKILL)
    failed = Verdict(
        False,
        f"the probe failed (exit {done.returncode}): {(done.stderr or '').strip()[-500:]}",
        cacheable=False,  # the probe itself broke (no memory, no numpy): not the kernel
    )
    if done.returncode != 0:
        return failed
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
        verified, reason = _typed(result["verified"], bool), _typed(result["reason"], str)
    except (IndexError, ValueError, KeyError, TypeError):
        return failed
    return Verdict(
        verified=verified,
        reason=reason,
        torch=str(result.get("torch", "")),
        capability=str(result.get("capability", "")),
    )


def verdict_for(dimensions: int, *, timeout_s: float = PROBE_TIMEOUT_S) -> Verdict:
    """The verdict for ``dimensions``: from the disk cache, else from a new probe (cached)."""
    if dimensions < 1 or dimensions % DIMENSION_MULTIPLE:
        return Verdict(
            False,
            f"{dimensions} dimensions: not a multiple of {DIMENSION_MULTIPLE}, which the "
            "AVX-512 kernel reads past",
            cacheable=False,
        )
    try:
        key = probe_key(dimensions)
    except importlib.metadata.PackageNotFoundError:
        return Verdict(False, "torch is not installed", cacheable=False)
    cached = _read_cache(key)
    if cached is not None:
        return cached
    verdict = run_probe(dimensions, timeout_s=timeout_s)
    if verdict.cacheable:
        _write_cache(key, verdict)
    return verdict


@dataclass(frozen=True)
class Int8Kernel:
    """The op, for the one dimension a child verified on this machine and torch."""

    torch: Any
    op: Any
    dimensions: int

    def accepts(self, codes: np.ndarray) -> bool:
        """Whether ranges of ``codes`` are inside the verified class (else: numpy)."""
        return (
            codes.ndim == 2
            and codes.shape[1] == self.dimensions
            and codes.dtype == np.int8
            and codes.flags.c_contiguous
            and codes.ctypes.data % CODES_ALIGNMENT == 0
        )

    def query(self, query: np.ndarray) -> Any:
        """The query as the kernel takes it: a fresh ``(1, d)`` bfloat16 tensor."""
        q32 = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        return self.torch.from_numpy(q32).to(self.torch.bfloat16)

    def scores(self, q16: Any, codes: Any, scale: Any) -> np.ndarray | None:
        """``op(q16, codes, scale)[0]`` as float32, or None when the call is not one that
        was verified (the caller then scores those rows in numpy)."""
        torch = self.torch
        d = self.dimensions
        rows = int(codes.shape[0])
        if not (
            rows > 0
            and rows % ROW_BLOCK == 0
            and tuple(codes.shape) == (rows, d)
            and codes.dtype == torch.int8
            and codes.is_contiguous()
            and codes.data_ptr() % CODES_ALIGNMENT == 0
            and tuple(q16.shape) == (1, d)
            and q16.dtype == torch.bfloat16
            and q16.is_contiguous()
            and q16.data_ptr() % QUERY_ALIGNMENT == 0
            and tuple(scale.shape) == (rows,)
            and scale.dtype == torch.bfloat16
        ):
            return None
        return self.op(q16, codes, scale)[0].float().numpy()


_lock = threading.Lock()
_kernels: dict[int, Int8Kernel | None] = {}
_verdicts: dict[int, Verdict] = {}


def select(dimensions: int, setting: str = "auto") -> Int8Kernel | None:
    """The verified kernel for ``dimensions``, or None (numpy). Probes at most once per
    process and dimension; with ``setting="numpy"`` it neither probes nor imports torch."""
    if resolve_setting(setting) == "numpy":
        return None
    with _lock:
        if dimensions not in _kernels:
            _kernels[dimensions] = _load(dimensions)
        return _kernels[dimensions]


def last_verdict(dimensions: int) -> Verdict | None:
    """Why :func:`select` chose what it did for ``dimensions`` (None: not asked yet)."""
    with _lock:
        return _verdicts.get(dimensions)


def _load(dimensions: int) -> Int8Kernel | None:
    verdict = verdict_for(dimensions)
    kernel = None
    if verdict.verified:
        kernel, problem = _import_verified(dimensions, verdict)
        if kernel is None:
            verdict = Verdict(False, problem, verdict.torch, verdict.capability, cacheable=False)
    _verdicts[dimensions] = verdict
    if kernel is None:
        log.warning(
            "dense first pass for %d dimensions: numpy, not torch's %s (%s)",
            dimensions,
            PRIVATE_OP,
            verdict.reason,
        )
    else:
        log.info(
            "dense first pass for %d dimensions: torch's %s on %s (%s%s)",
            dimensions,
            PRIVATE_OP,
            verdict.capability,
            verdict.reason,
            ", cached verdict" if verdict.cached else "",
        )
    return kernel


def _import_verified(dimensions: int, verdict: Verdict) -> tuple[Int8Kernel | None, str]:
    """The kernel in this process, if it is the torch and CPU path the child verified."""
    try:
        import torch

        op = torch.ops.aten._weight_int8pack_mm
    except (ImportError, AttributeError, RuntimeError) as exc:
        return None, f"torch's kernel is not available in this process: {exc!r}"
    here = (str(torch.__version__), capability_of(torch))
    if here != (verdict.torch, verdict.capability):
        return None, f"verified for torch {verdict.torch} on {verdict.capability}, this " + (
            f"process runs torch {here[0]} on {here[1]}"
        )
    return Int8Kernel(torch=torch, op=op, dimensions=dimensions), ""
