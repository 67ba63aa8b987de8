"""Schedules, the change sensor, the freshness policy and the failed-documents SLA check."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import yaml

from assets.definitions import build_definitions
from assets.freshness import (
    CHANGE_SENSOR,
    failed_documents_check,
    freshness_policy,
    schedule_name,
)
from pipelines.records import FailureReason, QuarantinedDocument
from trove.config import load_settings


def make_config(tmp_path):
    for name in ("wiki", "hr"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.md").write_text(f"# {name}\n\nhello")
    config = {
        "index": {"path": str(tmp_path / "index")},
        "state": {"path": str(tmp_path / "state")},
        "sources": [
            {
                "name": "wiki",
                "path": str(tmp_path / "wiki"),
                "schedule": "0 * * * *",
                "freshness_sla": "2h",
            },
            {"name": "hr", "path": str(tmp_path / "hr"), "freshness_sla": "30m"},
        ],
    }
    path = tmp_path / "trove.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_schedules_are_built_per_source_from_config(tmp_path):
    path = make_config(tmp_path)
    defs = build_definitions(load_settings(path), str(path))
    schedule = defs.resolve_schedule_def(schedule_name("wiki"))
    assert schedule.cron_schedule == "0 * * * *"
    with dg.instance_for_test() as instance:
        requests = schedule.evaluate_tick(
            dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def())
        ).run_requests
    assert [r.partition_key for r in requests] == ["wiki"]
    names = {s.name for s in defs.schedules}
    assert names == {schedule_name("wiki")}  # hr has no schedule


def test_change_sensor_requests_runs_only_for_changed_sources(tmp_path):
    path = make_config(tmp_path)
    defs = build_definitions(load_settings(path), str(path))
    sensor = defs.resolve_sensor_def(CHANGE_SENSOR)
    with dg.instance_for_test() as instance:
        first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
        assert sorted(r.partition_key for r in first.run_requests) == ["hr", "wiki"]
        quiet = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs)
        )
        assert quiet.run_requests == [] and quiet.skip_message
        (tmp_path / "hr" / "new.md").write_text("a new policy")
        changed = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=quiet.cursor, definitions=defs)
        )
    assert [r.partition_key for r in changed.run_requests] == ["hr"]
    assert changed.run_requests[0].run_key.startswith("hr:")


def test_freshness_policy_uses_the_tightest_sla(tmp_path):
    settings = load_settings(make_config(tmp_path))
    policy = freshness_policy(settings.sources)
    assert policy is not None
    assert policy.fail_window.to_timedelta() == timedelta(minutes=30)
    assert (
        freshness_policy([s.model_copy(update={"freshness_sla": None}) for s in settings.sources])
        is None
    )


def _quarantined(path: str, reason: FailureReason, first_seen: str) -> QuarantinedDocument:
    seen = datetime.fromisoformat(first_seen)
    return QuarantinedDocument(f"docs:{path}", path, "v1", "parse", str(reason), reason, seen, seen)


def test_failed_documents_longer_than_the_sla_fail_the_check():
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    failures = [
        _quarantined("old.pdf", FailureReason.ENCRYPTED, "2026-01-01T08:00:00+00:00"),
        _quarantined("new.pdf", FailureReason.MALFORMED, "2026-01-01T11:30:00+00:00"),
    ]
    result = failed_documents_check(failures, timedelta(hours=2), now=now)
    assert not result.passed
    assert result.metadata["failed_longer_than_sla"].value == 1
    assert result.metadata["overdue"].value[0]["path"] == "old.pdf"
    assert failed_documents_check(failures, timedelta(hours=6), now=now).passed
    assert failed_documents_check([], timedelta(hours=1), now=now).passed
