"""Sources with groups get a `source_groups` asset, a `sync_groups` job and their own schedule."""

from pathlib import Path

import dagster as dg
import numpy as np
import yaml

from assets.definitions import build_definitions
from assets.freshness import groups_schedule_name
from assets.groups import GROUPS_JOB
from core.acl import Acl
from retrieval.index.base import WriteBatch
from retrieval.index.embedded import EmbeddedIndex
from tests.connectors.confluence.fake import unreachable_source_config
from tests.retrieval.builders import DIM, record
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


def test_source_groups_materialises_with_counts_and_a_check(tmp_path: Path):
    from assets.definitions import build_definitions
    from tests.connectors.confluence.fake import FakeConfluence, make_source_config

    fake = FakeConfluence().start()
    try:
        fake.add_user("u-alice", "Alice", "alice@example.com")
        fake.add_user("u-bob", "Bob", None)
        fake.add_group("eng", ["u-alice", "u-bob"])
        fake.add_group("empty", [])
        source = make_source_config(fake, "wiki", token_file=tmp_path / "token", spaces=["ENG"])
        path = tmp_path / "trove.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "index": {"path": str(tmp_path / "index")},
                    "state": {"path": str(tmp_path / "state")},
                    "sources": [source],
                }
            )
        )
        defs = build_definitions(load_settings(path), str(path))
        with dg.DagsterInstance.ephemeral() as instance:
            result = defs.resolve_job_def(GROUPS_JOB).execute_in_process(
                partition_key="wiki", instance=instance
            )
        assert result.success
        (event,) = result.get_asset_materialization_events()
        metadata = event.event_specific_data.materialization.metadata
        assert metadata["groups"].value >= 2 and metadata["memberships"].value >= 2
        assert metadata["memberships_added"].value == metadata["memberships"].value
        (check,) = result.get_asset_check_evaluations()
        assert check.check_name == "acl_groups_known"
        assert check.passed  # no index yet: no ACL names a group

        # A chunk whose ACL names a group the directory does not know: the check warns.
        index = EmbeddedIndex.open(tmp_path / "index", create=True, dimensions=DIM)
        ghost = Acl(allow_groups=frozenset({"wiki:group:ghost"}))
        rng = np.random.default_rng(0)
        index.apply(WriteBatch(upserts=[record("wiki:page:1", 0, "x", ghost, rng=rng)]))
        index.close()
        with dg.DagsterInstance.ephemeral() as instance:
            again = defs.resolve_job_def(GROUPS_JOB).execute_in_process(
                partition_key="wiki", instance=instance
            )
        (check,) = again.get_asset_check_evaluations()
        assert not check.passed
        assert check.metadata["unknown_sample"].value == "wiki:group:ghost"
    finally:
        fake.stop()


def test_a_missing_secret_fails_at_once_with_its_message_and_no_retries(tmp_path: Path):
    path = tmp_path / "trove.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "state": {"path": str(tmp_path / "state")},
                "sources": [unreachable_source_config("TROVE_TEST_UNSET_TOKEN_VARIABLE")],
            }
        )
    )
    defs = build_definitions(load_settings(path), str(path))
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(GROUPS_JOB).execute_in_process(
            partition_key="wiki", instance=instance, raise_on_error=False
        )
    assert not result.success
    events = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in events
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "TROVE_TEST_UNSET_TOKEN_VARIABLE is empty or missing" in str(failure.step_failure_data)
