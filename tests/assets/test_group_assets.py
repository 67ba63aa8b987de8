"""Sources with groups get a `source_groups` asset, a `sync_groups` job and their own schedule."""

from pathlib import Path

import dagster as dg
import yaml

from assets.definitions import build_definitions
from assets.freshness import groups_schedule_name
from assets.groups import GROUPS_JOB
from trove.config import load_settings


def test_group_capable_sources_get_a_groups_asset_job_and_schedule(tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    config = {
        "index": {"path": str(tmp_path / "index")},
        "state": {"path": str(tmp_path / "state")},
        "sources": [
            {"name": "files", "path": str(docs), "acl": {"default": {"public": True}}},
            {
                "name": "wiki",
                "type": "confluence",
                "confluence": {
                    "url": "https://acme.atlassian.net/wiki",
                    "email": "bot@acme.com",
                    "api_token": {"env": "CONFLUENCE_TOKEN"},
                },
                "schedule": "*/15 * * * *",
                "groups_schedule": "0 * * * *",
            },
        ],
    }
    path = tmp_path / "trove.yaml"
    path.write_text(yaml.safe_dump(config))
    defs = build_definitions(load_settings(path), str(path))
    dg.Definitions.validate_loadable(defs)
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "source_groups" in keys and "search_index" in keys
    groups_job = defs.resolve_job_def(GROUPS_JOB)
    assert groups_job.partitions_def.get_partition_keys() == ["wiki"]  # files has no groups
    assert sorted(defs.resolve_job_def("ingest").partitions_def.get_partition_keys()) == [
        "files",
        "wiki",
    ]
    schedule = defs.resolve_schedule_def(groups_schedule_name("wiki"))
    assert schedule.cron_schedule == "0 * * * *" and schedule.job_name == GROUPS_JOB
    assert defs.resolve_schedule_def("sync_wiki").cron_schedule == "*/15 * * * *"


def test_a_filesystem_only_config_has_no_groups_job(tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    path = tmp_path / "trove.yaml"
    path.write_text(yaml.safe_dump({"sources": [{"name": "f", "path": str(docs)}]}))
    defs = build_definitions(load_settings(path), str(path))
    job_names = {job.name for job in defs.resolve_all_job_defs()}
    assert GROUPS_JOB not in job_names and "ingest" in job_names
