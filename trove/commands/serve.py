"""`trove serve`, `trove token`, `trove mcp`, `trove tool-schema`, `trove load-test` and
`trove eval-stages`: the retrieval service for agents, from the command line.

Heavy imports (FastAPI, uvicorn, the MCP SDK, the model) happen inside the commands.
"""

from __future__ import annotations

import json
import os
import sys
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="trove.yaml to use (default: $TROVE_CONFIG or ./trove.yaml)"
    ),
]
HostOption = Annotated[str, typer.Option("--host", help="Interface to listen on.")]
PortOption = Annotated[int, typer.Option("--port", "-p", min=1, max=65535)]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _settings(config: str | None):
    from trove.config import find_config, load_settings

    return load_settings(find_config(config))


def _service(settings):
    from trove.wiring import build_retrieval_service

    return build_retrieval_service(settings)


WorkersOption = Annotated[
    int,
    typer.Option(
        "--workers",
        "-w",
        min=1,
        max=64,
        help="Server processes sharing the memory-mapped index (each loads the query model; "
        "the per-minute limits are split between them).",
    ),
]


def serve(
    config: ConfigOption = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8080,
    workers: WorkersOption = 1,
) -> None:
    """Serve the retrieval API (OpenAPI docs at /docs)."""
    import uvicorn

    from trove.wiring import WORKERS_ENV_VAR, create_api_app

    settings = _settings(config)
    if workers > 1:
        from trove.config import CONFIG_ENV_VAR, find_config

        # Each worker process builds its own app and service from the same config.
        os.environ[CONFIG_ENV_VAR] = str(find_config(config).resolve())
        os.environ[WORKERS_ENV_VAR] = str(workers)
        uvicorn.run(
            "trove.wiring:create_app_from_environment",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            access_log=False,
        )
        return
    service = _service(settings)
    try:
        uvicorn.run(
            create_api_app(settings, service=service), host=host, port=port, access_log=False
        )
    finally:
        service.close()


def token(
    user: Annotated[str, typer.Option("--user", "-u", help="The token's `sub`.")],
    groups: Annotated[str, typer.Option("--groups", "-g", help="Comma-separated.")] = "",
    tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime: 90s, 15m, 1h, 1d.")] = "1h",
    config: ConfigOption = None,
) -> None:
    """Print an HS256 token signed with the configured secret (for local use)."""
    from core.config import parse_duration
    from retrieval.auth import mint_token

    settings = _settings(config)
    secret = settings.api.jwt_secret
    if secret is None:
        raise _fail("no api.jwt_secret configured (set it in trove.yaml or TROVE_API__JWT_SECRET)")
    try:
        lifetime = parse_duration(ttl)
        typer.echo(
            mint_token(
                secret.get_secret_value(),
                user,
                [g for g in groups.split(",") if g.strip()],
                tenant=tenant,
                ttl=lifetime,
                audience=settings.api.jwt_audience,
                issuer=settings.api.jwt_issuer,
            )
        )
    except ValueError as exc:  # a bad --ttl, name or secret (AuthConfigError): bad input, 2
        raise _fail(str(exc)) from exc


def mcp(
    config: ConfigOption = None,
    transport: Annotated[str, typer.Option(help="stdio or http (streamable HTTP).")] = "stdio",
    host: HostOption = "127.0.0.1",
    port: PortOption = 8765,
    token_value: Annotated[
        str | None,
        typer.Option("--token", help="stdio: the caller's JWT (default: $TROVE_TOKEN)."),
    ] = None,
) -> None:
    """Serve the `search_knowledge` and `get_document` MCP tools (stdio or streamable HTTP)."""
    from retrieval.service import ServiceError

    if transport not in ("stdio", "http"):
        raise _fail(f"unknown transport {transport!r} (valid: stdio, http)")
    settings = _settings(config)
    service = _service(settings)
    try:
        if transport == "stdio":
            from retrieval.mcp_server import run_stdio

            try:
                run_stdio(service, token_value or os.environ.get("TROVE_TOKEN"))
            except ServiceError as exc:
                raise _fail(f"the MCP caller's token was refused: {exc}") from exc
        else:
            import uvicorn

            from retrieval.mcp_server import mcp_http_app

            uvicorn.run(mcp_http_app(service, host=host), host=host, port=port, access_log=False)
    finally:
        service.close()


def tool_schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here.")] = None,
) -> None:
    """Print the OpenAI-style tool (function) JSON schema of `search_knowledge`."""
    from retrieval.mcp_server import search_knowledge_tool_schema

    text = json.dumps(search_knowledge_tool_schema(), indent=2)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")


def _probes(settings, queries: Path) -> list[Any]:
    from retrieval.api.loadtest import Probe
    from retrieval.auth import mint_token
    from retrieval.evaluate import load_queries

    if settings.api.jwt_secret is None:
        raise _fail("the load test mints tokens with api.jwt_secret; none is configured")
    secret = settings.api.jwt_secret.get_secret_value()
    golden = load_queries(queries)
    return [
        Probe(
            q.query,
            mint_token(
                secret,
                q.user,
                q.groups,
                tenant=q.tenant,
                audience=settings.api.jwt_audience,
                issuer=settings.api.jwt_issuer,
            ),
        )
        for q in golden
    ]


def load_test(
    url: Annotated[str, typer.Option(help="A running `trove serve` on loopback.")],
    config: ConfigOption = None,
    queries: Annotated[
        Path | None,
        typer.Option("--queries", "-q", help="Golden queries (JSONL); default: the demo's."),
    ] = None,
    clients: Annotated[int, typer.Option(min=1, max=64)] = 16,
    duration: Annotated[float, typer.Option(help="Seconds.", min=0.1, max=120)] = 30.0,
) -> None:
    """Load-test a loopback server: concurrent searches as each query's user; JSON report."""
    from retrieval.api.loadtest import run_load_test
    from trove.demo import QUERIES_FILE

    settings = _settings(config)
    probes = _probes(settings, queries or QUERIES_FILE)
    report = run_load_test(url, probes, clients=clients, duration_s=duration)
    typer.echo(json.dumps(report, indent=2))
    if report["errors"]:
        raise typer.Exit(1)


def eval_stages(
    config: ConfigOption = None,
    queries: Annotated[
        Path | None,
        typer.Option("--queries", "-q", help="Golden queries (JSONL); default: the demo's."),
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=50)] = 8,
) -> None:
    """What each ranking stage adds or costs: quality, latency and leaks per stage (JSON)."""
    from trove.demo import QUERIES_FILE

    settings = _settings(config)
    api = settings.api
    if not (api.jwt_secret or api.jwt_public_key_file or api.jwks_file):
        # Evaluation searches as each golden query's principal directly; no token is
        # ever verified, so a throwaway key stands in for an unconfigured one.
        import secrets

        from pydantic import SecretStr

        api.jwt_secret = SecretStr(secrets.token_hex(32))
        api.audit_log = None
    service = _service(settings)
    try:
        report = evaluate_stages(service, queries or QUERIES_FILE, k=k)
    finally:
        service.close()
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


# Questions the demo corpus cannot answer: the low_confidence threshold should flag these
# and not the golden queries.
OFF_TOPIC = (
    "What is the capital of Australia?",
    "How do I bake sourdough bread at home?",
    "Who won the football world cup in 1998?",
    "What is the boiling point of ethanol?",
    "Recommend a good science fiction novel",
    "How tall is Mount Kilimanjaro?",
    "What is the airspeed velocity of an unladen swallow?",
    "Translate good morning into Japanese",
    "How many moons does Jupiter have?",
    "Best way to train a puppy to sit",
    "What does photosynthesis produce?",
    "Lyrics of a famous Beatles song",
    "How do volcanoes form?",
    "Explain the offside rule in ice hockey",
    "What is the population of Brazil?",
    "How to grow tomatoes on a balcony",
    "Which planet has the longest day?",
    "Chess opening for beginners",
    "What is the chemical formula of table salt?",
    "How long do sea turtles live?",
)

STAGES = {
    "fusion": {"rerank": False, "diversify": False},
    "fusion+diversify": {"rerank": False, "diversify": True},
    "fusion+rerank": {"rerank": True, "diversify": False},
    "fusion+rerank+diversify": {"rerank": True, "diversify": True},
}


def best_threshold(positives: list[float], negatives: list[float]) -> dict[str, float]:
    """The cut (midpoint between observed scores) with the best balanced accuracy."""
    values = sorted(set(positives) | set(negatives))
    cuts = [(a + b) / 2 for a, b in pairwise(values)] or values
    best = {"threshold": 0.0, "balanced_accuracy": 0.0}
    for cut in cuts:
        tpr = sum(p >= cut for p in positives) / len(positives)  # answerable, kept confident
        tnr = sum(n < cut for n in negatives) / len(negatives)  # off-topic, flagged
        accuracy = (tpr + tnr) / 2
        if accuracy > best["balanced_accuracy"]:
            best = {"threshold": round(cut, 4), "balanced_accuracy": round(accuracy, 4)}
    return best


def evaluate_stages(service, queries: Path, *, k: int = 8) -> dict[str, Any]:
    """Run golden queries through the service with each stage switched on or off."""
    from retrieval.evaluate import Retrieved, evaluate, load_queries
    from retrieval.service import StageOptions, passages_of

    golden = load_queries(queries)
    index = service.index
    report: dict[str, Any] = {"k": k, "queries": len(golden), "reranker": service.reranker.name}
    members: dict[str, tuple[str, ...]] = {}

    def may_read(q, passage) -> bool:
        # Every chunk merged into the passage, judged from the ACL stored in the index.
        ids = members.get(passage.chunk_id, (passage.chunk_id,))
        records = index.get_chunks(list(ids))
        # As the search ran: with the groups the directory adds to the golden identity.
        principal = service.searcher.expand(q.principal())
        return len(records) == len(ids) and all(r.acl.permits(principal) for r in records)

    for name, options in STAGES.items():
        stage = StageOptions(**options)

        def run(q, stage=stage):
            outcome = service.search(q.principal(), q.query, top_k=k, stages=stage)
            members.update({r.chunk_id: r.chunk_ids for r in outcome.results})
            return Retrieved(passages_of(outcome), outcome.low_confidence)

        result = evaluate(golden, run, k=k, may_read=may_read).to_dict()
        result.pop("per_query")
        report[name] = result

    # Negative questions (nothing relevant) are not answerable: they are reported in
    # each stage's `negative` block, and kept out of the threshold measurement (their
    # askers too: a user who may read nothing would make every off-topic search empty).
    positive = [q for q in golden if not q.negative]
    answerable = [
        service.search(q.principal(), q.query, top_k=k).best_evidence or 0.0 for q in positive
    ]
    askers = positive or golden
    off_topic = [
        service.search(askers[i % len(askers)].principal(), text, top_k=k).best_evidence or 0.0
        for i, text in enumerate(OFF_TOPIC)
    ]
    threshold = service.low_confidence_threshold
    report["low_confidence"] = {
        "threshold": threshold,
        "flagged_answerable": (
            sum(s < threshold for s in answerable) / len(answerable) if answerable else None
        ),
        "flagged_off_topic": sum(s < threshold for s in off_topic) / len(off_topic),
        "best_evidence_answerable": sorted(round(s, 4) for s in answerable),
        "best_evidence_off_topic": sorted(round(s, 4) for s in off_topic),
        "measured_best": best_threshold(answerable, off_topic) if answerable else None,
    }
    return report


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("token")(token)
    app.command("mcp")(mcp)
    app.command("tool-schema")(tool_schema)
    app.command("load-test")(load_test)
    app.command("eval-stages")(eval_stages)
