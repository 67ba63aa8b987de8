"""Scanned documents through the whole path (issue 22): Dagster ingest, ACLs, search, status.

A folder holds a scanned PDF (finance only), a mixed PDF (text page 1, scanned
page 2) and a photo-like PNG. A real Dagster materialisation ingests it; its
``parsed_documents`` metadata says how many pages were OCR'd and how long it took;
``trove search`` finds the OCR'd text for the allowed user only, citing the page.
Then the same folder is ingested by ``trove ingest`` in a process whose PATH has
no tesseract: the scans are quarantined as ``needs_ocr`` and ``trove status``
says how to enable OCR.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from typer.testing import CliRunner

from assets.ingest import build_ingest_assets
from assets.resources import TroveResource
from trove import cli
from trove.bench.ocr import mixed_pdf, render_page, scanned_pdf

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(
        shutil.which("tesseract") is None or shutil.which("pdftoppm") is None,
        reason="tesseract/pdftoppm not installed (make setup installs them as root)",
    ),
]

INVOICE = [
    "Invoice from Harbour Cranes BV",
    "Replacement hoist cable for berth seven crane.",
    "Total due within thirty days: 18400.00 euro.",
]
MIXED_TEXT = ["Terminal safety bulletin", "All visitors wear a helmet on the quay."]
MIXED_SCAN = [
    "Signed inspection form",
    "The mooring bollards on pier nine passed the load inspection.",
]
PHOTO = ["Whiteboard notes", "Dredging the eastern basin starts in October."]


def _folder(root: Path) -> Path:
    docs = root / "docs"
    (docs / "finance").mkdir(parents=True)
    scanned_pdf(docs / "finance" / "invoice-scan.pdf", [render_page(INVOICE, angle=0.5)])
    mixed_pdf(docs / "bulletin.pdf", MIXED_TEXT, render_page(MIXED_SCAN, noise=0.001))
    render_page(PHOTO, size=16, angle=-0.7, noise=0.002).save(docs / "whiteboard.png")
    return docs


def _config(root: Path, docs: Path) -> Path:
    config = {
        "index": {"path": str(root / "index")},
        "state": {"path": str(root / "state")},
        "sources": [
            {
                "name": "scans",
                "path": str(docs),
                "acl": {
                    "default": {"allow_groups": ["staff"]},
                    "rules": [{"match": "finance/**", "allow_groups": ["finance"]}],
                },
            }
        ],
    }
    path = root / "trove.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _search(config: Path, query: str, user: str, groups: str) -> list[dict]:
    result = CliRunner().invoke(
        cli.app, ["search", query, "-u", user, "-g", groups, "-c", str(config), "--json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["results"]


def test_scans_are_ingested_searchable_by_the_allowed_user_with_their_page(tmp_path):
    docs = _folder(tmp_path)
    config = _config(tmp_path, docs)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            build_ingest_assets(["scans"]),
            partition_key="scans",
            resources={"trove": TroveResource(config_path=str(config))},
            instance=instance,
        )
    assert result.success
    parsed = next(
        m.event_specific_data.materialization.metadata
        for m in result.get_asset_materialization_events()
        if m.asset_key.to_user_string() == "parsed_documents"
    )
    assert parsed["documents_parsed"].value == 3 and parsed["documents_failed"].value == 0
    assert parsed["documents_ocr"].value == 3
    assert parsed["pages_ocr"].value == 3  # the scan, page 2 of the mixed PDF, the photo
    assert parsed["ocr_seconds"].value > 0

    hits = _search(config, "hoist cable for the berth seven crane invoice", "fay", "finance")
    invoice = [h for h in hits if h["doc_id"] == "scans:finance/invoice-scan.pdf"]
    assert invoice and "hoist cable" in invoice[0]["text"]
    assert invoice[0]["citation"]["pages"] == [1]
    denied = _search(config, "hoist cable for the berth seven crane invoice", "sam", "staff")
    assert all(h["doc_id"] != "scans:finance/invoice-scan.pdf" for h in denied)
    assert all("hoist" not in h["text"] for h in denied)

    mixed = _search(config, "mooring bollards pier nine load inspection", "sam", "staff")
    top = next(h for h in mixed if h["doc_id"] == "scans:bulletin.pdf")
    assert "mooring bollards" in top["text"] and 2 in top["citation"]["pages"]
    photo = _search(config, "dredging the eastern basin", "sam", "staff")
    assert photo[0]["doc_id"] == "scans:whiteboard.png" and "Dredging" in photo[0]["text"]


def test_without_tesseract_scans_are_needs_ocr_and_status_says_how_to_enable_it(tmp_path):
    docs = _folder(tmp_path)
    config = _config(tmp_path, docs)
    bin_dir = tmp_path / "bin"  # a PATH with the project's commands but no OCR tools
    bin_dir.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}"}
    trove = str(Path(sys.executable).parent / "trove")
    ingest = subprocess.run(
        [trove, "ingest", "-c", str(config), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ingest.returncode in (0, 1), ingest.stderr
    status = subprocess.run(
        [trove, "status", "-c", str(config), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(status.stdout)
    source = report["sources"]["scans"]
    failed = {f["path"]: f["reason_class"] for f in source["failures"]}
    assert failed == {"finance/invoice-scan.pdf": "needs_ocr", "whiteboard.png": "needs_ocr"}
    assert source["ocr"]["available"] is False
    assert "tesseract is not installed" in source["ocr"]["missing"]
    (hint,) = report["hints"]
    assert hint["source"] == "scans" and "tesseract-ocr" in hint["hint"]
    assert "2 document(s) need OCR" in hint["hint"]
    assert source["documents"] == 1  # the mixed PDF's text page is indexed
    text = subprocess.run(
        [trove, "status", "-c", str(config)], env=env, capture_output=True, text=True, check=False
    )
    assert "HINT" in text.stdout and "tesseract-ocr" in text.stdout
