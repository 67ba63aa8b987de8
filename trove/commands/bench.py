"""`trove bench`: speed and quality measured side by side with peers, printed as JSON."""

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
    backend: Annotated[
        str,
        typer.Option(help="embedded, or opensearch: also time a real node side by side."),
    ] = "embedded",
    opensearch_url: Annotated[
        str | None,
        typer.Option(help="A running node (default: OPENSEARCH_URL, else one is started)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Hybrid query latency, lexical latency, memory and open time on a generated index."""
    from trove.bench.query import run

    result = run(
        chunks,
        queries=queries,
        peers=peers,
        workdir=workdir,
        backend=backend,
        opensearch_url=opensearch_url,
    )
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


@bench_app.command("serve")
def bench_serve(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="trove.yaml of an ingested index.")
    ] = Path("trove.yaml"),
    queries: Annotated[
        Path | None,
        typer.Option("--queries", "-q", help="Golden queries (JSONL); default: the demo's."),
    ] = None,
    duration: Annotated[float, typer.Option(help="Seconds per phase.", min=1, max=120)] = 15.0,
    clients: Annotated[int, typer.Option(min=2, max=64)] = 16,
    threads: Annotated[int, typer.Option(help="In-process threads.", min=1, max=64)] = 2,
    workers: Annotated[
        int | None, typer.Option(help="`trove serve --workers` (default: its own).", min=1)
    ] = None,
    mcp: Annotated[bool, typer.Option(help="Also load MCP over streamable HTTP.")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The API and MCP under load beside the in-process engine on the same index (JSON)."""
    from trove.bench.serve import run
    from trove.demo import QUERIES_FILE

    result = run(
        config,
        queries or QUERIES_FILE,
        duration_s=duration,
        clients=clients,
        threads=threads,
        workers=workers,
        mcp=mcp,
    )
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
    from trove.bench.resync import run

    result = run(corpus)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("quality")
def bench_quality(
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Golden set (repeatable; default: every set with an index)."),
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=100)] = 10,
    peers: Annotated[bool, typer.Option(help="Also run LlamaIndex's QueryFusionRetriever.")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Quality per golden set and ranking stage, beside LlamaIndex fusion on the same chunks."""
    from trove.bench.quality import GOLDEN_SETS, run

    try:
        result = run(sets or GOLDEN_SETS, k=k, peers=peers)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("backends")
def bench_backends(
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Golden set (repeatable; default: 18f-handbook and demo)."),
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=100)] = 10,
    recall_chunks: Annotated[
        int,
        typer.Option(min=0, help="Generated chunks for the filtered k-NN recall (0: skip)."),
    ] = 20_000,
    opensearch_url: Annotated[
        str | None,
        typer.Option(help="A running node (default: OPENSEARCH_URL, else one is started)."),
    ] = None,
    workdir: Annotated[Path | None, typer.Option(help="Keep the demo's index here.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Quality parity: the golden sets on the embedded index and on a real OpenSearch node."""
    from trove.bench.backends import GOLDEN_SETS, run

    try:
        result = run(
            sets or GOLDEN_SETS,
            url=opensearch_url,
            k=k,
            recall_chunks=recall_chunks,
            workdir=workdir,
        )
    except (ValueError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(result, indent=None if as_json else 2))
    if not result["parity"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


@bench_app.command("ocr")
def bench_ocr(
    pages: Annotated[int, typer.Option(min=2, max=200, help="Generated pages to read.")] = 12,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Parse workers (cores).")] = 2,
    peers: Annotated[
        bool, typer.Option(help="Also run unstructured's ocr_only strategy on the same pages.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """OCR pages per second and character accuracy on generated scanned pages (JSON)."""
    from trove.bench.ocr import run

    try:
        result = run(pages, workers=workers, peer=peers)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(result, indent=None if as_json else 2))
