"""Group memberships as Dagster assets: one partition per source that has groups.

``source_groups`` replaces the source's rows in the group directory (see
:mod:`retrieval.directory`); chunks are untouched. Its check warns when chunk ACLs
name groups the directory does not know — nobody can read through such a
group, which is safe but usually means a sync scope or permission is missing.
Each source's ``groups_schedule`` gets its own schedule (:mod:`assets.freshness`).
"""

from collections.abc import Sequence

import dagster as dg

from assets.checks import source_acls
from assets.errors import permanent_source_errors
from assets.metadata import asset_check_result, stage_metadata
from assets.resources import TroveResource
from pipelines.checks import GROUPS_CHECK, acl_groups_known
from pipelines.groups import group_tokens_in_acls, sync_groups
from retrieval.index.base import IndexNotFoundError

GROUPS_GROUP = "groups"
GROUPS_JOB = "sync_groups"


def build_group_assets(source_names: Sequence[str]) -> list[dg.AssetsDefinition]:
    if not source_names:
        return []
    partitions = dg.StaticPartitionsDefinition(list(source_names))

    @dg.asset(
        partitions_def=partitions,
        group_name=GROUPS_GROUP,
        kinds={"python"},
        check_specs=[dg.AssetCheckSpec(GROUPS_CHECK, asset="source_groups")],
        description="The source's group memberships (nesting flattened) in the group "
        "directory, used to expand a caller's identity at query time.",
    )
    def source_groups(
        context: dg.AssetExecutionContext, trove: TroveResource
    ) -> dg.MaterializeResult:
        name = context.partition_key
        config = trove.settings().source(name)
        directory = trove.directory()
        try:
            with permanent_source_errors():
                result = sync_groups(config, directory)
            known = directory.known_groups(name)
        finally:
            directory.close()
        try:
            index = trove.index()
        except IndexNotFoundError:
            named: set[str] = set()
        else:
            try:
                named = group_tokens_in_acls(source_acls(index, name).values(), name)
            finally:
                index.close()
        check = asset_check_result(acl_groups_known(named, known))
        return dg.MaterializeResult(metadata=stage_metadata(result), check_results=[check])

    return [source_groups]
