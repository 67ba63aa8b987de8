"""`trove index rebuild|check|status`: index lifecycle and health.

``status_of(settings)`` is also what `trove status` shows for the index.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from trove.config import Settings, find_config, load_settings

index_app = typer.Typer(help="Index lifecycle: rebuild, readiness, stats.", no_args_is_help=True)

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="trove.yaml to use (default: $TROVE_CONFIG or ./trove.yaml)"
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _settings(config: str | None) -> Settings:
    return load_settings(find_config(config))


def expected_chunks_by_source(settings: Settings) -> dict[str, int]:
    """Chunk counts per source recorded in the pipeline's manifest (what the index must hold)."""
    from pipelines.store import StagingStore

    counts: dict[str, int] = {}
    for source in settings.sources:
        store = StagingStore.for_source(settings.state.path, source.name)
        try:
            counts[source.name] = sum(len(e.chunk_ids) for e in store.manifest().values())
        finally:
            store.close()
    return counts


def status_of(settings: Settings) -> dict[str, Any]:
    """The index's state for `trove status`: never raises for an absent or unreachable index.

    Keys: ``backend``, ``ready`` (bool), ``error`` (str or None), and when ready
    ``chunks``, ``documents``, ``dimensions``, ``generation``, ``size_bytes``;
    embedded adds ``path``; OpenSearch adds ``hosts``, ``alias``, ``physical_index``,
    ``version``, ``cluster_name``, ``hybrid_filter`` (3.x) and ``health``.
    """
    from retrieval.index.base import IndexBackendError

    cfg = settings.index
    report: dict[str, Any] = {"backend": cfg.backend, "ready": False, "error": None}
    if cfg.backend == "embedded":
        from retrieval.index.embedded import EmbeddedIndex

        report["path"] = str(cfg.path)
        try:
            index = EmbeddedIndex.open(cfg.path)
        except IndexBackendError as exc:
            report["error"] = str(exc)
            return report
        try:
            report.update(_stats(index.stats()))
        finally:
            index.close()
        report["ready"] = True
        return report

    from opensearchpy.exceptions import TransportError

    from retrieval.index.opensearch.index import OpenSearchIndex

    report.update({"hosts": list(cfg.hosts), "alias": f"{cfg.index_prefix}-chunks"})
    try:
        remote = OpenSearchIndex.open(cfg)
    except (IndexBackendError, ValueError) as exc:  # ValueError: contradictory auth settings
        report["error"] = str(exc)
        return report
    try:
        cluster = remote.cluster
        report.update(
            {
                "version": cluster.number,
                "cluster_name": cluster.cluster_name,
                "hybrid_filter": cluster.supports_hybrid_filter,
                "physical_index": remote.physical_index(),
                "health": remote.client.cluster.health(index=remote.alias).get("status"),
            }
        )
        report.update(_stats(remote.stats()))
        report["ready"] = True
    except TransportError as exc:
        report["error"] = f"OpenSearch answered {exc.status_code}: {exc.error}"
    finally:
        remote.close()
    return report


def _stats(stats) -> dict[str, Any]:
    return {
        "chunks": stats.chunks,
        "documents": stats.documents,
        "dimensions": stats.dimensions,
        "generation": stats.generation,
        "size_bytes": stats.size_bytes,
    }


def rebuild_index(settings: Settings, *, validate: bool = True, keep_old: bool = False):
    """Blue/green rebuild of the OpenSearch index; None for the embedded backend.

    :raises RebuildError: a check failed; the old index still serves.
    """
    if settings.index.backend == "embedded":
        return None
    from retrieval.index.opensearch.client import build_client, check_ready
    from retrieval.index.opensearch.lifecycle import IndexLayout, rebuild

    cfg = settings.index
    client = build_client(cfg)
    try:
        check_ready(client, list(cfg.hosts))
        layout = IndexLayout(
            prefix=cfg.index_prefix,
            engine=cfg.knn_engine,
            shards=cfg.number_of_shards,
            replicas=cfg.number_of_replicas,
        )
        expected = expected_chunks_by_source(settings) if validate else None
        return rebuild(client, layout, expected_by_source=expected, drop_old=not keep_old)
    finally:
        client.close()


@index_app.command("rebuild")
def rebuild_cmd(
    config: ConfigOption = None,
    validate: Annotated[
        bool, typer.Option(help="Check chunk counts per source against the pipeline manifest.")
    ] = True,
    keep_old: Annotated[bool, typer.Option(help="Keep the previous index (alias moved).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Blue/green rebuild: copy into a new index version, validate, swap the alias atomically."""
    settings = _settings(config)
    report = rebuild_index(settings, validate=validate, keep_old=keep_old)
    if report is None:
        message = "not needed for the embedded backend: every write already commits atomically"
        typer.echo(json.dumps({"rebuilt": False, "reason": message}) if as_json else message)
        return
    if as_json:
        typer.echo(json.dumps({"rebuilt": True, **report.to_dict()}))
        return
    typer.echo(
        f"rebuilt {report.alias}: {report.old_index} -> {report.new_index}, "
        f"{report.chunks} chunks ({', '.join(f'{s} {n}' for s, n in report.by_source.items())})"
        + ("" if report.dropped_old else f"; {report.old_index} kept")
    )


@index_app.command("check")
def check_cmd(config: ConfigOption = None) -> None:
    """Readiness: exit 0 when the index backend answers and is recent enough, else 1."""
    status = status_of(_settings(config))
    if not status["ready"]:
        typer.echo(f"not ready: {status['error']}", err=True)
        raise typer.Exit(1)
    typer.echo(f"ready: {status['backend']} index, {status['chunks']} chunks")


@index_app.command("status")
def status_cmd(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Index stats (for OpenSearch: cluster version, alias, physical index, health)."""
    status = status_of(_settings(config))
    if as_json:
        typer.echo(json.dumps(status))
        return
    for key, value in status.items():
        typer.echo(f"{key}: {value}")


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
