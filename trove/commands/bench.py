"""`trove bench query|ingest`: speed measured side by side with peers, printed as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

bench_app = typer.Typer(
    help="Benchmarks, each run side by side with its peers.", no_args_is_help=True
)


@bench_app.command("query")
def bench_query(
    chunks: Annotated[
        int, typer.Option("--chunks", min=100, help="Index size to generate.")
    ] = 100_000,
    queries: Annotated[int, typer.Option(min=10, help="Timed queries per system.")] = 200,
    peers: Annotated[bool, typer.Option(help="Also time LlamaIndex fusion and rank-bm25.")] = True,
    workdir: Annotated[Path | None, typer.Option(help="Keep generated data here.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Hybrid query latency, lexical latency, memory and open time on a generated index."""
    from trove.bench.query import run

    result = run(chunks, queries=queries, peers=peers, workdir=workdir)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("ingest")
def bench_ingest(
    backend: Annotated[
        str | None, typer.Option(help="Embedding backend: torch or onnx-int8 (default: config).")
    ] = None,
    documents: Annotated[int | None, typer.Option(help="Use at most this many documents.")] = None,
    peers: Annotated[bool, typer.Option(help="Also time the LlamaIndex IngestionPipeline.")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """End-to-end ingestion throughput vs the bare encoder and LlamaIndex."""
    from trove.bench.ingest import run

    result = run(backend=backend, max_documents=documents, peers=peers)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("resync")
def bench_resync(
    corpus: Annotated[
        Path | None,
        typer.Option(help="Folder to ingest (default: ../shared/corpora/18f-handbook)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """First ingest vs an unchanged re-sync of the same corpus."""
    from trove.bench.resync import BenchmarkError, run

    try:
        result = run(corpus)
    except BenchmarkError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(result, indent=None if as_json else 2))


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
