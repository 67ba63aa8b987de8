"""`trove ingest`: run the Dagster asset graph in-process, one source partition at a time.

There is one orchestration path: the CLI materialises the same assets that
`dagster dev` shows, and reads the summary each run recorded in the staging store.

Except when there is nothing to do: without ``DAGSTER_HOME`` the run would go to
an ephemeral instance and its record be discarded, so a source whose groups are
not due, whose index is at the generation its manifest recorded and whose dry
scan finds nothing new, changed, deleted or to retry is recorded in-process
(:mod:`pipelines.idle`) and Dagster is not even imported. With ``DAGSTER_HOME``
set every run goes through Dagster, so the UI's run history lists each re-sync.

:func:`ingest` returns an :class:`IngestReport` of each source's
:class:`~pipelines.run_records.RunSummary`; :meth:`IngestReport.to_dict` renders
it as ``trove ingest --json`` prints it (and :func:`run_ingest` returns it),
:func:`ingest_lines` as the text ``trove ingest`` prints.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from core.errors import TroveError
from pipelines.idle import idle_scan, record_idle_run
from pipelines.run_records import RunSummary
from pipelines.store import StagingStore, StateUnreadableError
from retrieval.directory import GroupDirectory
from trove.config import Settings, load_settings

if TYPE_CHECKING:
    import dagster as dg


@dataclass(frozen=True)
class IngestReport:
    """What an ingest did, per source, in the order the sources were named."""

    sources: Mapping[str, RunSummary]

    @property
    def partial(self) -> list[str]:
        """Sources whose listing stopped early (indexed in part; the next run resumes)."""
        return sorted(name for name, s in self.sources.items() if s.sync_error)

    def to_dict(self) -> dict[str, Any]:
        """The report as ``trove ingest --json`` prints it."""
        return {"sources": {name: s.to_dict() for name, s in self.sources.items()}}


def ingest_lines(report: IngestReport) -> list[str]:
    """The report as ``trove ingest`` prints it: a line per source, then what went wrong.

    Lines use Rich markup; names, paths and reasons are escaped (a path may hold ``[``).
    """
    lines: list[str] = []
    for name, s in report.sources.items():
        lines.append(
            f"[bold]{escape(name)}[/]: {s.documents_seen} seen, {s.added} added, "
            f"{s.changed} changed, {s.deleted} deleted, {s.acl_only} ACL-only, "
            f"{s.documents_parsed} parsed, {s.chunks_written} chunks written, "
            f"{s.chunks_embedded} embedded"
        )
        lines.extend(
            f"  [yellow]quarantined[/] {escape(f.path)} ({f.reason_class}): {escape(f.reason)}"
            for f in s.documents_failed
        )
        if s.index_repair is not None:
            reason = escape(s.index_repair.reason)
            lines.append(f"  [yellow]rebuilt[/] {s.rebuilt} documents: {reason}")
        if s.sync_error:
            lines.append(
                f"  [yellow]listing stopped early[/]: {escape(s.sync_error)} "
                "(what was listed is indexed; the next run resumes from there)"
            )
    return lines


class IngestError(TroveError, RuntimeError):
    """A stage failed for a whole source (not a single document); the message says where."""


def _instance() -> dg.DagsterInstance:
    import dagster as dg

    # With DAGSTER_HOME set, CLI runs land in the same run history the UI shows.
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            error = event.step_failure_data.error
            message = error.message.strip() if error else "unknown error"
            cause = error.cause.message.strip() if error and error.cause else ""
            return f"step {event.step_key} failed: {cause or message}"
    return "the run failed"


def _groups_due(settings: Settings, name: str) -> bool:
    source = settings.source(name)
    if not source.has_groups:
        return False
    if source.groups_schedule is None:
        return True
    directory = GroupDirectory.in_state_dir(settings.state.path)
    try:
        return name not in directory.status()
    finally:
        directory.close()


def _idle_summary(settings: Settings, name: str, sync_groups: bool) -> RunSummary | None:
    """The source's summary when it had nothing to do (recorded as a run); None: run it."""
    if sync_groups and _groups_due(settings, name):
        return None
    try:
        store = StagingStore.for_source(settings.state.path, name)
    except StateUnreadableError:
        return None  # the asset graph fails with the fix
    try:
        idle = idle_scan(settings.source(name), store, settings.index)
        return None if idle is None else record_idle_run(store, idle)
    finally:
        store.close()


def run_ingest(
    config_path: str | Path,
    sources: Sequence[str] | None = None,
    settings: Settings | None = None,
    log_level: str = "WARNING",
    retry_failed: bool = False,
    sync_groups: bool = True,
    idle_check: bool = True,
) -> dict[str, Any]:
    """:func:`ingest`, its report as ``trove ingest --json`` prints it."""
    report = ingest(
        config_path,
        sources,
        settings=settings,
        log_level=log_level,
        retry_failed=retry_failed,
        sync_groups=sync_groups,
        idle_check=idle_check,
    )
    return report.to_dict()


def ingest(
    config_path: str | Path,
    sources: Sequence[str] | None = None,
    settings: Settings | None = None,
    log_level: str = "WARNING",
    retry_failed: bool = False,
    sync_groups: bool = True,
    idle_check: bool = True,
) -> IngestReport:
    """Ingest the named sources (all by default); returns the per-source summary.

    Sources with groups sync their memberships first (``sync_groups``) — unless
    they have their own ``groups_schedule`` and have synced before: then that
    schedule keeps them fresh and an ingest does not repeat the work.
    ``log_level`` applies to Dagster's event log on stderr (``DEBUG`` shows
    every step starting and finishing). ``retry_failed`` makes quarantined
    documents eligible again even though they did not change. ``idle_check``
    records a source with nothing to do without Dagster (only when
    ``DAGSTER_HOME`` is unset; see the module doc).
    """
    config_path = str(Path(config_path).resolve())
    settings = settings or load_settings(config_path)
    names = list(sources) if sources else [s.name for s in settings.sources]
    for name in names:
        settings.source(name)  # unknown names fail before any work
    if retry_failed:
        for name in names:
            store = StagingStore.for_source(settings.state.path, name)
            try:
                store.retry_failed()
            finally:
                store.close()
    done: dict[str, RunSummary] = {}
    if idle_check and not os.environ.get("DAGSTER_HOME"):
        for name in names:
            found = _idle_summary(settings, name, sync_groups)
            if found is not None:
                done[name] = found
    busy = [name for name in names if name not in done]
    if busy:
        done.update(_run_graph(settings, config_path, busy, log_level, sync_groups))
    return IngestReport({name: done[name] for name in names})


def _run_graph(
    settings: Settings,
    config_path: str,
    names: Sequence[str],
    log_level: str,
    sync_groups: bool,
) -> dict[str, RunSummary]:
    """Materialise the asset graph for each source; their summaries, by name."""
    # The parse workers' forkserver (spaCy, unstructured: seconds of CPU) is not started
    # here: the scan starts it once it knows a document needs parsing (an unchanged
    # re-sync never pays for it). Dagster is imported lazily: `trove --help` stays quick.
    from assets.definitions import build_definitions
    from assets.groups import GROUPS_JOB

    defs = build_definitions(settings, config_path)
    job = defs.resolve_job_def("ingest")
    summaries: dict[str, RunSummary] = {}
    with _instance() as instance:
        for name in names:
            if sync_groups and _groups_due(settings, name):
                # Memberships first, so the documents' group ACLs resolve at once.
                groups = defs.resolve_job_def(GROUPS_JOB).execute_in_process(
                    partition_key=name,
                    instance=instance,
                    raise_on_error=False,
                    run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
                )
                if not groups.success:
                    raise IngestError(f"source {name!r} groups: {_failure_message(groups)}")
            result = job.execute_in_process(
                partition_key=name,
                instance=instance,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            )
            if not result.success:
                raise IngestError(f"source {name!r}: {_failure_message(result)}")
            store = StagingStore.for_source(settings.state.path, name)
            try:
                last = store.last_run()
            finally:
                store.close()
            if last is None:  # the write stage records one with the index: not reached
                raise IngestError(f"source {name!r}: the run recorded no summary")
            summaries[name] = last.summary
    return summaries
