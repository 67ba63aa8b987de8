"""How much cheaper an unchanged re-sync is than the first ingest (issue: >= 50x).

Ingests a corpus (by default ../shared/corpora/18f-handbook) into a fresh
temporary index, then syncs it again unchanged: once in-process and once as a
new `trove ingest` process (imports and all), as a scheduler would run it. Wall
and CPU-seconds for both; the new process's CPU includes any process it starts.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from trove.ingest import run_ingest

DEFAULT_CORPUS = Path(__file__).resolve().parents[2].parent / "shared/corpora/18f-handbook"


def _children_cpu_s() -> float:
    """CPU-seconds of the waited-for child processes so far (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class BenchmarkError(RuntimeError):
    pass


def _config(corpus: Path, workdir: Path) -> Path:
    config = workdir / "trove.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "index": {"path": str(workdir / "index")},
                "state": {"path": str(workdir / "state")},
                "sources": [
                    {
                        "name": "corpus",
                        "path": str(corpus),
                        "acl": {"default": {"allow_groups": ["all-staff"]}},
                    }
                ],
            }
        )
    )
    return config


def run(corpus: Path | None = None, workdir: Path | None = None) -> dict[str, Any]:
    corpus = Path(corpus or DEFAULT_CORPUS)
    if not corpus.is_dir():
        raise BenchmarkError(f"corpus not found: {corpus} (pass --corpus)")
    with tempfile.TemporaryDirectory(prefix="trove-resync-") as tmp:
        work = Path(workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        config = _config(corpus, work)
        started = time.perf_counter()
        first = run_ingest(config)["sources"]["corpus"]
        first_s = time.perf_counter() - started
        started, cpu = time.perf_counter(), time.process_time()
        again = run_ingest(config)["sources"]["corpus"]
        resync_s = time.perf_counter() - started
        resync_cpu_s = time.process_time() - cpu
        children = _children_cpu_s()
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "trove", "ingest", "--config", str(config), "--json"],
            check=True,
            capture_output=True,
        )
        resync_cli_s = time.perf_counter() - started
        # The new process and every process it started (a parse worker would count).
        resync_cli_cpu_s = _children_cpu_s() - children
    if again["chunks_embedded"] or again["documents_parsed"]:
        raise BenchmarkError(f"the re-sync was not a no-op: {again}")
    return {
        "corpus": str(corpus),
        "documents": first["documents_seen"],
        "chunks": first["chunks_written"],
        "first_ingest_s": round(first_s, 3),
        "resync_s": round(resync_s, 3),
        "speedup": round(first_s / resync_s, 1),
        "resync_cpu_s": round(resync_cpu_s, 3),
        "resync_new_process_s": round(resync_cli_s, 3),
        "resync_new_process_cpu_s": round(resync_cli_cpu_s, 3),
        "speedup_new_process": round(first_s / resync_cli_s, 1),
    }
