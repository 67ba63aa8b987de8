"""Group sync: a source's memberships into the group directory, on their own schedule.

Kept apart from document sync on purpose: memberships change more often than
content, and applying them touches no chunk (see :mod:`retrieval.directory`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from connectors.base import Connector, GroupSource
from connectors.registry import open_connector
from core.acl import Acl
from pipelines.config import SourceConfig
from pipelines.stages import StageResult
from retrieval.directory import GroupDirectory


def sync_groups(
    config: SourceConfig, directory: GroupDirectory, connector: Connector | None = None
) -> StageResult:
    """Replace the source's memberships in ``directory`` with what the source reports now."""
    started = time.perf_counter()
    own = connector is None
    connector = connector or open_connector(config.scope(), config.connector_settings)
    try:
        if not isinstance(connector, GroupSource):
            raise ValueError(f"source {config.name!r} (type {config.type}) has no groups to sync")
        snapshot = connector.sync_groups()
    finally:
        if own:
            connector.close()
    if snapshot.source != config.name:
        raise ValueError(f"group snapshot names source {snapshot.source!r}, not {config.name!r}")
    counts = directory.replace_source(snapshot)
    return StageResult(
        counts={
            "groups": counts.groups,
            "users": counts.users,
            "memberships": counts.memberships,
            "memberships_added": counts.memberships_added,
            "memberships_removed": counts.memberships_removed,
        },
        seconds=time.perf_counter() - started,
    )


def group_tokens_in_acls(acls: Iterable[Acl | None], source: str) -> set[str]:
    """The source's group tokens that these ACLs name (allow and deny lists, layers)."""
    prefixes = (f"{source}:group:", f"{source}:sitegroup:")
    tokens: set[str] = set()
    for acl in acls:
        if acl is None:
            continue
        names = set(acl.allow_groups) | set(acl.deny_groups)
        for layer in acl.layers:
            names |= layer.groups
        tokens |= {n for n in names if n.startswith(prefixes)}
    return tokens
