"""Parse targets and preload modules for the forkserver tests (test_parse_forkserver.py).

:func:`probe_parse` runs in a worker and answers with what the worker process
already had when it was asked, before parsing anything: whether the forkserver's
preload ran there, and who its parent is. It imports nothing that would load a
partitioner itself, so a partitioner found imported came from the forkserver.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from connectors.models import SourceDocument
from core.acl import Acl
from pipelines.models import ParsedDocument, ParsedElement

PRELOADED_PARTITIONERS = (
    "unstructured.partition.md",
    "unstructured.partition.html",
    "unstructured.partition.text",
)


def worker_state() -> dict[str, Any]:
    preload = sys.modules.get("pipelines.parse_preload")
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "preload_failed": None if preload is None else dict(preload.FAILED),
        "partitioners": [name for name in PRELOADED_PARTITIONERS if name in sys.modules],
    }


def probe_parse(path: Path, **kwargs: Any) -> ParsedDocument:
    """Dies on ``crash`` files, hangs on ``slow`` ones; otherwise returns :func:`worker_state`
    as JSON text (a one-element document)."""
    name = Path(path).name
    if "crash" in name:
        os._exit(3)
    if "slow" in name:
        time.sleep(600)
    text = json.dumps(worker_state())
    return ParsedDocument(
        doc_id=kwargs["doc_id"],
        version=kwargs["version"],
        title="probe",
        text=text,
        elements=(ParsedElement("NarrativeText", text, 0, len(text)),),
    )


def document(path: Path) -> SourceDocument:
    """A source document for a local file (as the worker tests build them)."""
    return SourceDocument(
        doc_id=f"test:{path.name}",
        source="test",
        path=path.name,
        uri=path.as_uri(),
        title="",
        version="v1",
        size=path.stat().st_size,
        modified_at=None,
        doc_type=path.suffix.lstrip("."),
        acl=Acl.empty(),
        local_path=path,
    )
