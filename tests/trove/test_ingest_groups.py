"""`trove ingest` syncs a source's groups only when no schedule of their own keeps them fresh."""

from pathlib import Path

from connectors.base import GroupSnapshot
from retrieval.directory import GroupDirectory
from trove.config import settings_from_dict
from trove.ingest import _groups_due


def settings(tmp_path: Path, **extra):
    wiki = {
        "name": "wiki",
        "type": "confluence",
        "confluence": {"url": "http://x/wiki", "email": "a@b", "api_token": {"env": "T"}},
        **extra,
    }
    return settings_from_dict(
        {
            "state": {"path": str(tmp_path / "state")},
            "sources": [wiki, {"name": "files", "path": str(tmp_path)}],
        },
        tmp_path,
    )


def test_groups_are_synced_by_ingest_unless_their_own_schedule_already_did(tmp_path):
    plain = settings(tmp_path)
    assert _groups_due(plain, "wiki") and not _groups_due(plain, "files")
    scheduled = settings(tmp_path, groups_schedule="0 * * * *")
    assert _groups_due(scheduled, "wiki")  # never synced yet: the first ingest does it
    GroupDirectory.in_state_dir(scheduled.state.path).replace_source(GroupSnapshot("wiki", {}))
    assert not _groups_due(scheduled, "wiki")
    assert _groups_due(plain, "wiki")  # without a schedule, every ingest keeps them fresh
