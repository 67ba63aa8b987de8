"""Trove's records as Dagster sees them: a stage's metadata and an asset check's result.

The two functions here are the only place a pipelines record becomes a Dagster
type; the assets call them and nothing else builds metadata by hand.
"""

from __future__ import annotations

import dagster as dg

from pipelines.checks import CheckResult, MetadataValue
from pipelines.run_records import StageResult

_SEVERITY = {"error": dg.AssetCheckSeverity.ERROR, "warn": dg.AssetCheckSeverity.WARN}
_FAILURE_COLUMNS = ("path", "reason_class", "reason")

Metadata = dict[str, dg.MetadataValue | int | float | str | None]


def _value(value: MetadataValue) -> dg.MetadataValue | int | float | str | None:
    """Lists and mappings as JSON; numbers, text and None as they are."""
    if isinstance(value, list | dict):
        return dg.MetadataValue.json(value)
    return value


def stage_metadata(result: StageResult) -> Metadata:
    """A stage's counts, its duration, and what it could not do (failures as a table)."""
    metadata: Metadata = dict(result.counts)
    metadata["duration_s"] = round(result.seconds, 3)
    if result.warnings:
        metadata["index_repair"] = dg.MetadataValue.text("\n".join(result.warnings))
    if result.error:
        metadata["sync_error"] = dg.MetadataValue.text(result.error)
    if result.failures:
        rows = [failure.to_dict() for failure in result.failures]
        metadata["failures"] = dg.MetadataValue.table(
            records=[dg.TableRecord({c: row[c] for c in _FAILURE_COLUMNS}) for row in rows],
            schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in _FAILURE_COLUMNS]),
        )
    return metadata


def asset_check_result(result: CheckResult) -> dg.AssetCheckResult:
    """A check's outcome (:mod:`pipelines.checks`) as the result Dagster records."""
    return dg.AssetCheckResult(
        check_name=result.name,
        passed=result.passed,
        severity=_SEVERITY[result.severity],
        description=result.description,
        metadata={name: _value(value) for name, value in result.metadata.items()},
    )
