"""Idle re-syncs: the parsers (the parse workers' forkserver) start only when the scan
finds a document to parse, and the change sensor's tick imports no parser or model."""

from __future__ import annotations

import json
import subprocess
import sys

from core.acl_policy import AclPolicy
from pipelines.stages import scan_source
from tests.pipelines.test_stages import Pipeline


def _scan_calls(pipe: Pipeline) -> int:
    calls: list[int] = []
    config = pipe.config()
    scan_source(
        config,
        pipe.store,
        AclPolicy.from_config(config.acl),
        on_content_changes=lambda: calls.append(1),
    )
    return len(calls)


def test_parsers_start_only_when_a_document_needs_parsing(tmp_path):
    pipe = Pipeline(tmp_path)
    try:
        pipe.write("guide.md", "Laptops arrive on day one.")
        assert _scan_calls(pipe) == 1  # a new document: parsers are wanted, once
        pipe.run()  # parsed, indexed and committed
        assert _scan_calls(pipe) == 0  # an unchanged re-sync starts nothing
        pipe.run()
        pipe.write("guide.md", "Laptops arrive on day two.")
        assert _scan_calls(pipe) == 1  # a changed document
    finally:
        pipe.index.close()


HEAVY = ("unstructured", "spacy", "torch", "onnxruntime", "transformers", "sentence_transformers")

SENSOR_TICK = """
import json, sys
import dagster as dg
from trove.config import Settings
from assets.definitions import build_definitions
from assets.freshness import CHANGE_SENSOR

heavy = tuple(json.loads(sys.argv[3]))
settings = Settings.model_validate({
    "index": {"path": sys.argv[2] + "/index"},
    "state": {"path": sys.argv[2] + "/state"},
    "sources": [{"name": "docs", "path": sys.argv[1],
                 "acl": {"default": {"allow_groups": ["staff"]}}}],
})
defs = build_definitions(settings, sys.argv[2] + "/trove.yaml")
before = set(sys.modules)
sensor = defs.resolve_sensor_def(CHANGE_SENSOR)
with dg.instance_for_test() as instance:
    result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
print(json.dumps({
    "requests": [r.partition_key for r in result.run_requests],
    "loaded": sorted(m for m in set(sys.modules) - before if m.split(".")[0] in heavy),
    "loaded_before": sorted(m for m in before if m.split(".")[0] in heavy),
}))
"""


def test_the_change_sensor_tick_imports_no_parser_or_model(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Badges come from reception.")
    out = subprocess.run(
        [sys.executable, "-c", SENSOR_TICK, str(docs), str(tmp_path), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["requests"] == ["docs"]  # the tick really ran and saw the new source
    assert report["loaded"] == [], report
    assert report["loaded_before"] == [], report  # loading the definitions neither
