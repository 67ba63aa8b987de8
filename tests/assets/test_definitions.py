"""The Dagster code location loads, and a real in-process materialisation runs every stage."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.definitions import build_definitions, load_definitions
from assets.ingest import ACL_COVERAGE_CHECK, MANIFEST_CHECK, build_ingest_assets
from assets.resources import TroveResource
from trove.config import load_settings

STAGES = [
    "source_documents",
    "parsed_documents",
    "document_chunks",
    "screened_chunks",
    "acl_tagged_chunks",
    "chunk_embeddings",
    "search_index",
]


def write_config(tmp_path: Path, docs: Path) -> Path:
    config = {
        "index": {"path": str(tmp_path / "index")},
        "state": {"path": str(tmp_path / "state")},
        "sources": [
            {
                "name": "notes",
                "path": str(docs),
                "acl": {
                    "default": {"allow_groups": ["staff"]},
                    "rules": [{"match": "private/**", "allow_users": ["ann"]}],
                },
            }
        ],
    }
    path = tmp_path / "trove.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_definitions_load_with_every_stage_and_the_ingest_job(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    path = write_config(tmp_path, docs)
    defs = build_definitions(load_settings(path), str(path))
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("ingest")
    assert sorted(job.partitions_def.get_partition_keys()) == ["notes"]
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == set(STAGES)
    # The workspace entry point builds the same thing from $TROVE_CONFIG.
    assert isinstance(load_definitions(str(path)), dg.Definitions)


def test_workspace_yaml_names_the_definitions_module():
    workspace = yaml.safe_load(Path("workspace.yaml").read_text())
    entry = workspace["load_from"][0]["python_module"]
    assert (entry["module_name"], entry["attribute"]) == ("assets.definitions", "defs")


@pytest.mark.model
def test_materialize_runs_every_stage_with_metadata_and_checks(tmp_path):
    docs = tmp_path / "docs"
    (docs / "private").mkdir(parents=True)
    (docs / "guide.md").write_text(
        "# Onboarding guide\n\nNew starters get a laptop on their first day.\n\n"
        "## Security\n\nEnable two-factor authentication before you read e-mail.\n"
    )
    (docs / "private" / "salary.txt").write_text("Ann's salary review is due in March.\n")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    path = write_config(tmp_path, docs)
    assets = build_ingest_assets(["notes"])
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            assets,
            partition_key="notes",
            resources={"trove": TroveResource(config_path=str(path))},
            instance=instance,
        )
    assert result.success
    materialized = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.get_asset_materialization_events()
        for m in [m.event_specific_data.materialization]
    }
    assert set(materialized) == set(STAGES)
    assert materialized["source_documents"]["added"].value == 3
    assert materialized["parsed_documents"]["documents_parsed"].value == 2
    assert materialized["parsed_documents"]["documents_failed"].value == 1
    assert "failures" in materialized["parsed_documents"]
    assert materialized["chunk_embeddings"]["chunks_embedded"].value >= 2
    assert materialized["search_index"]["chunks_written"].value >= 2
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks[ACL_COVERAGE_CHECK].passed
    assert checks[MANIFEST_CHECK].passed
