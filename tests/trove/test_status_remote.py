"""`trove status` for a remote source: no remote call, the group sync and last sync error shown."""

from datetime import UTC, datetime

from connectors.base import GroupSnapshot
from retrieval.directory import GroupDirectory
from tests.connectors.confluence.fake import unreachable_source_config
from trove.config import settings_from_dict
from trove.status import source_status


def test_remote_sources_report_without_calling_the_remote_system(tmp_path):
    settings = settings_from_dict(
        {
            "state": {"path": str(tmp_path / "state")},
            # Nothing listens there: any call would fail the status.
            "sources": [unreachable_source_config("UNSET_TOKEN_VARIABLE")],
        },
        tmp_path,
    )
    GroupDirectory.in_state_dir(settings.state.path).replace_source(
        GroupSnapshot("wiki", {"wiki:group:eng": frozenset({"a@acme.com"})})
    )
    status = source_status(settings, settings.sources[0], datetime.now(UTC)).to_dict()
    assert status["type"] == "confluence"
    assert "not_computed" in status["pending"]
    assert status["groups"]["groups"] == 1 and status["groups"]["memberships"] == 1
    assert status["last_sync"] is None and status["last_sync_error"] is None
