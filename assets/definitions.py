"""The single Dagster `Definitions` that workspace.yaml loads.

The partitions (one per source) come from the configuration, so the code
location reads ``trove.yaml`` (or ``$TROVE_CONFIG``) when it loads: this module
is an edge, like the CLI.
"""

from __future__ import annotations

import dagster as dg

from assets.freshness import (
    build_change_sensor,
    build_group_schedules,
    build_schedules,
    freshness_policy,
)
from assets.groups import GROUPS_GROUP, GROUPS_JOB, build_group_assets
from assets.ingest import GROUP, build_ingest_assets
from assets.resources import TroveResource
from core.runtime import configure_offline_environment
from trove.config import Settings, find_config, load_settings

INGEST_JOB = "ingest"


# Transient failures (a file locked mid-write, a busy disk) get a second and third
# chance, spaced out; a deterministic failure costs at most a few seconds more.
RUN_RETRY_POLICY = dg.RetryPolicy(
    max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def build_definitions(settings: Settings, config_path: str) -> dg.Definitions:
    assets = build_ingest_assets(
        [s.name for s in settings.sources], freshness_policy=freshness_policy(settings.sources)
    )
    ingest_job = dg.define_asset_job(
        INGEST_JOB,
        selection=dg.AssetSelection.groups(GROUP),
        description="Sync one source: scan, parse, chunk, tag, embed, index.",
        op_retry_policy=RUN_RETRY_POLICY,
    )
    jobs = [ingest_job]
    schedules = build_schedules(settings.sources, ingest_job)
    group_sources = [s for s in settings.sources if s.has_groups]
    if group_sources:
        assets += build_group_assets([s.name for s in group_sources])
        groups_job = dg.define_asset_job(
            GROUPS_JOB,
            selection=dg.AssetSelection.groups(GROUPS_GROUP),
            description="Sync one source's group memberships into the group directory.",
            op_retry_policy=RUN_RETRY_POLICY,
        )
        jobs.append(groups_job)
        schedules += build_group_schedules(group_sources, groups_job)
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        sensors=[build_change_sensor(settings, ingest_job)],
        resources={"trove": TroveResource(config_path=config_path)},
    )


def load_definitions(config: str | None = None) -> dg.Definitions:
    configure_offline_environment()
    path = find_config(config)
    return build_definitions(load_settings(path), str(path))


def __getattr__(name: str) -> dg.Definitions:
    # `defs` is built on first access rather than at import, so that importing
    # this module (tests, the CLI) never requires a config file to exist.
    if name == "defs":
        return load_definitions()
    raise AttributeError(name)
