"""Keeping sources fresh: per-source schedules, a change sensor, SLA checks.

* ``schedule: "<cron>"`` on a source gives it a schedule that requests an
  ingest run of its partition.
* One sensor polls every filesystem source's cheap fingerprint (paths, sizes,
  modification times; no file is read) and requests a run for each source that
  changed since the last tick. Its cursor records the fingerprints.
* ``freshness_sla`` on a source drives the freshness policy on
  ``search_index`` and the ``failed_documents_within_sla`` check.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.metadata import asset_check_result
from connectors.errors import ConnectorError
from connectors.filesystem import FilesystemConnector
from pipelines.checks import failed_documents_within_sla
from pipelines.config import SourceConfig
from pipelines.records import QuarantinedDocument
from trove.config import Settings

CHANGE_SENSOR = "source_change_sensor"


def schedule_name(source: str) -> str:
    return f"sync_{source.replace('-', '_').replace('.', '_')}"


def _partition_schedules(
    sources: Sequence[SourceConfig],
    job: dg.UnresolvedAssetJobDefinition,
    cron_of: Callable[[SourceConfig], str | None],
    name_of: Callable[[str], str],
    what: str,
) -> list[dg.ScheduleDefinition]:
    """One schedule per source that has a cron, each requesting that source's partition."""
    schedules = []
    for source in sources:
        cron = cron_of(source)
        if not cron:
            continue

        def request(context: dg.ScheduleEvaluationContext, _name: str = source.name):
            return dg.RunRequest(partition_key=_name, tags={"trove/source": _name})

        schedules.append(
            dg.ScheduleDefinition(
                name=name_of(source.name),
                cron_schedule=cron,
                job=job,
                execution_fn=request,
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description=f"{what} {source.name!r} on {cron!r}.",
            )
        )
    return schedules


def build_schedules(
    sources: Sequence[SourceConfig], job: dg.UnresolvedAssetJobDefinition
) -> list[dg.ScheduleDefinition]:
    return _partition_schedules(sources, job, lambda s: s.schedule, schedule_name, "Re-sync source")


def changed_sources(
    sources: Sequence[SourceConfig], previous: dict[str, str]
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(sources whose fingerprint changed, new fingerprints, unreadable sources with reasons)."""
    changed: list[str] = []
    current: dict[str, str] = {}
    errors: dict[str, str] = {}
    for source in sources:
        if source.type != "filesystem":
            continue
        try:
            current[source.name] = FilesystemConnector(source.scope()).fingerprint()
        except ConnectorError as exc:
            errors[source.name] = str(exc)
            continue
        if previous.get(source.name) != current[source.name]:
            changed.append(source.name)
    return changed, current, errors


def build_change_sensor(
    settings: Settings, job: dg.UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    sources = list(settings.sources)

    @dg.sensor(
        name=CHANGE_SENSOR,
        job=job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests an ingest of each filesystem source whose files changed.",
    )
    def source_change_sensor(context: dg.SensorEvaluationContext):
        previous = json.loads(context.cursor) if context.cursor else {}
        changed, current, errors = changed_sources(sources, previous)
        for name, reason in errors.items():
            context.log.warning(f"cannot poll source {name!r}: {reason}")
        context.update_cursor(json.dumps(current, sort_keys=True))
        if not changed:
            return dg.SkipReason("no source changed since the last check")
        return [
            dg.RunRequest(
                partition_key=name,
                run_key=f"{name}:{current[name]}",
                tags={"trove/source": name, "trove/trigger": "file-change"},
            )
            for name in changed
        ]

    return source_change_sensor


def tightest_sla(sources: Sequence[SourceConfig]) -> timedelta | None:
    slas = [s.freshness_sla for s in sources if s.freshness_sla]
    return min(slas) if slas else None


def freshness_policy(sources: Sequence[SourceConfig]) -> dg.FreshnessPolicy | None:
    """One policy for the partitioned index asset: the tightest SLA among sources.

    Dagster evaluates a policy per asset, not per partition; each source's own SLA
    is checked by `trove status` and the `failed_documents_within_sla` check.
    """
    sla = tightest_sla(sources)
    if sla is None:
        return None
    return dg.FreshnessPolicy.time_window(fail_window=sla, warn_window=sla / 2)


def failed_documents_check(
    quarantine: Sequence[QuarantinedDocument], sla: timedelta | None, now: datetime | None = None
) -> dg.AssetCheckResult:
    """Fails (and so reports them) when documents stay failed for longer than the SLA."""
    result = failed_documents_within_sla(quarantine, sla, now or datetime.now(UTC))
    return asset_check_result(result)


def groups_schedule_name(source: str) -> str:
    return f"sync_groups_{source.replace('-', '_').replace('.', '_')}"


def build_group_schedules(
    sources: Sequence[SourceConfig], job: dg.UnresolvedAssetJobDefinition
) -> list[dg.ScheduleDefinition]:
    return _partition_schedules(
        sources,
        job,
        lambda s: s.groups_schedule if s.has_groups else None,
        groups_schedule_name,
        "Sync the groups of",
    )
