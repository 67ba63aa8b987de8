"""The parse workers' forkserver preload: importing this module readies a process to parse.

:mod:`pipelines.parse_worker` forks its worker processes from a ``multiprocessing``
forkserver and names this module in ``set_forkserver_preload``. The forkserver
imports it once; every worker forked afterwards (copy-on-write, so they share
these pages) starts with the work below already done, where a spawned worker did
it all again, seconds of CPU each (docs/benchmarks.md#why-the-ingest-pipeline-is-built-this-way):

1. the offline environment (:func:`core.runtime.configure_offline_environment`)
   and spaCy imported without torch, first, as a worker's own start-up does;
2. the modules a worker runs (:mod:`pipelines.parse_worker`, :mod:`pipelines.parse`,
   :mod:`pipelines.guard`);
3. unstructured's Markdown, HTML and plain-text partitioners imported and run once
   on a tiny sample through :func:`pipelines.parse.parse_file`: a worker's first
   document of a type otherwise pays for these imports and for loading the
   offline NLP stand-in. Other types (PDF, DOCX...) still import on first use, in
   the worker, as before.

Nothing may escape the import: the forkserver swallows only ``ImportError`` from
its preload, and anything else would kill it. Each step's failure is caught and
recorded in :data:`FAILED` (step name -> error), and the step is skipped; a worker
then does that work itself when it needs it, exactly as without a preload. So
every import beyond the standard library is inside a step.

Every step is something a worker would do anyway, so importing this module
anywhere else (tests do) only warms that process up.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable
from pathlib import Path

# Small, but each reaches the code paths a real page does (front matter, lists,
# a table, code, a link) so that nothing is left to import on a worker's first page.
_SAMPLES: dict[str, str] = {
    "md": (
        "---\ntitle: Warm-up\n---\n# Heading\n\n"
        "Some *narrative* text is written here, with [a link](https://example.com).\n\n"
        "- item one\n- item two\n  - nested item\n\n1. first\n2. second\n\n"
        "| Column | Value |\n| ------ | ----- |\n| a      | 1     |\n\n"
        '```python\nprint("code")\n```\n\n> A quoted line says something.\n'
    ),
    "html": (
        "<html><head><title>Warm-up</title></head><body><h1>Heading</h1>"
        "<p>Some narrative text is written here.</p><ul><li>an item</li></ul></body></html>"
    ),
    "txt": "Heading\n\nSome narrative text is written here.\n",
}
_WORKER_MODULES = ("pipelines.parse_worker", "pipelines.parse", "pipelines.guard")


def _offline_environment() -> None:
    # lazy: runs in the worker, after the offline environment is set
    from core.runtime import configure_offline_environment

    configure_offline_environment()


def _spacy_without_torch() -> None:
    # lazy: runs in the worker, after the offline environment is set
    from pipelines.offline_nlp import import_spacy_without_torch

    import_spacy_without_torch()


def _worker_modules() -> None:
    for name in _WORKER_MODULES:
        importlib.import_module(name)


def _parse_sample(kind: str) -> Callable[[], None]:
    def parse() -> None:
        # lazy: runs in the worker, after the offline environment is set
        from pipelines.parse import parse_file

        with tempfile.TemporaryDirectory(prefix="trove-parse-preload-") as folder:
            path = Path(folder) / f"warm-up.{kind}"
            path.write_text(_SAMPLES[kind], encoding="utf-8")
            parse_file(path, doc_id=f"warm-up:{kind}", version="0")

    return parse


def steps() -> list[tuple[str, Callable[[], None]]]:
    """The warm-up steps, in order: name and function."""
    return [
        ("offline_environment", _offline_environment),
        ("spacy", _spacy_without_torch),
        ("worker_modules", _worker_modules),
        *((f"parse_{kind}", _parse_sample(kind)) for kind in _SAMPLES),
    ]


def warm_up() -> dict[str, str]:
    """Run every step; returns the ones that failed, with their error (empty: all ran)."""
    failed: dict[str, str] = {}
    for name, step in steps():
        try:
            step()
        # BaseException too: a SystemExit from a library, or a Ctrl-C reaching the
        # forkserver (same process group) mid-import, must not end the forkserver;
        # the process that owns it handles its own Ctrl-C.
        except BaseException as exc:
            failed[name] = _describe(exc)
    return failed


def _describe(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:  # an exception whose str() raises
        message = ""
    return f"{type(exc).__name__}: {message}"[:300] if message else type(exc).__name__


FAILED: dict[str, str] = warm_up()
"""The steps that failed in this process and why; empty when the warm-up is complete."""
