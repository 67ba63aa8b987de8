"""The `trove` command line: a thin shell over the ingestion graph and the retrieval API."""

from __future__ import annotations

import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text
from typer.core import TyperGroup

from core.acl import Principal
from core.errors import ConfigError, TroveError
from core.identity import InvalidIdentity
from core.runtime import configure_offline_environment
from retrieval.api.loadtest import LoadTestError
from retrieval.evaluate import EvalError, evaluate, load_queries
from trove.bench.errors import BenchError
from trove.config import Settings, find_config, load_settings

if TYPE_CHECKING:
    from trove.ingest import IngestReport

err = Console(stderr=True)
out = Console()

# The exit status of a TroveError that reaches the command line, by its most specific
# listed class. Bad input is 2: the config, a name with no canonical form, a golden-query
# file, a load test's target, a benchmark's arguments or inputs. Any other TroveError
# is a run that failed (the index, a source, the model, the audit log...): 1.
EXIT_STATUS: dict[type[TroveError], int] = {
    ConfigError: 2,
    InvalidIdentity: 2,
    EvalError: 2,
    LoadTestError: 2,
    BenchError: 2,
}
FAILED_RUN = 1


def exit_status(exc: TroveError) -> int:
    """The exit status `trove` ends with when a command lets ``exc`` through."""
    for cls in type(exc).__mro__:
        status = EXIT_STATUS.get(cls)
        if status is not None:
            return status
    return FAILED_RUN


def _print_error(message: str) -> None:
    # Never wrapped at the terminal's width nor read as rich markup: what the error says.
    err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True, highlight=False)


class _TroveGroup(TyperGroup):
    """The root command: any TroveError a command lets through becomes `error: <message>`
    on stderr and :func:`exit_status`, never a traceback. Anything else is a bug and
    keeps its traceback."""

    # ``ctx`` is typer's vendored click Context, which typer does not export.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TroveError as exc:
            _print_error(str(exc))
            raise typer.Exit(exit_status(exc)) from exc


app = typer.Typer(
    cls=_TroveGroup,
    help="Trove: permission-filtered, citable knowledge for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="trove.yaml to use (default: $TROVE_CONFIG or ./trove.yaml)"
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    _print_error(message)
    return typer.Exit(code)


def _settings(config: str | None) -> tuple[Settings, Path]:
    path = find_config(config)
    return load_settings(path), path


class _RichSink:
    """Progress bars for long stages (shown on stderr, so --json output stays clean)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def start(self, task: str, total: int) -> None:
        self.tasks[task] = self.progress.add_task(task, total=total)

    def advance(self, task: str, amount: int = 1) -> None:
        self.progress.advance(self.tasks[task], amount)

    def finish(self, task: str) -> None:
        self.progress.remove_task(self.tasks.pop(task))


@contextmanager
def _progress_bars(enabled: bool):
    from pipelines import progress as progress_hooks

    if not enabled:
        yield
        return
    bars = Progress(
        TextColumn("[bold]{task.description:>6}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    progress_hooks.set_sink(_RichSink(bars))
    try:
        with bars:
            yield
    finally:
        progress_hooks.set_sink(None)


def _ingest(
    config_path: Path, show_progress: bool, verbose: bool = False, retry_failed: bool = False
) -> IngestReport:
    from trove.ingest import ingest as run

    with _progress_bars(show_progress and not verbose):
        return run(
            config_path,
            log_level="DEBUG" if verbose else "WARNING",
            retry_failed=retry_failed,
        )


def _print_lines(lines: list[str]) -> None:
    """Print a report's text rendering: its Rich markup styles it, nothing is guessed."""
    for line in lines:
        out.print(line, highlight=False)


@app.callback()
def _main() -> None:
    configure_offline_environment()


@app.command()
def ingest(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show Dagster's event log on stderr.")
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed", help="Retry quarantined documents even if they did not change."
        ),
    ] = False,
) -> None:
    """Sync every configured source into the index (incremental: unchanged files are skipped)."""
    from trove.ingest import ingest_lines

    _, path = _settings(config)
    report = _ingest(
        path, show_progress=sys.stderr.isatty(), verbose=verbose, retry_failed=retry_failed
    )
    if as_json:
        out.print_json(data=report.to_dict())
    else:
        _print_lines(ingest_lines(report))
    if report.partial:
        raise typer.Exit(3)


def _principal(user: str, groups: str | None, tenant: str | None) -> Principal:
    return Principal.of(user, [g for g in (groups or "").split(",") if g.strip()], tenant)


def _open_searcher(settings: Settings):
    from trove.wiring import open_searcher

    return open_searcher(settings)


def _citation_line(passage) -> str:
    c = passage.citation
    where = c.path
    if c.section:
        where += " › " + " › ".join(c.section)
    if c.pages:
        where += f" (p. {', '.join(str(p) for p in c.pages)})"
    return f"{c.title} — {where} [chars {c.char_start}–{c.char_end}]"


def _print_passages(passages) -> None:
    if not passages:
        out.print("[dim]no passages this user may read match the query[/]")
    for rank, p in enumerate(passages, 1):
        out.print(f"[bold cyan][{rank}][/] {_citation_line(p)}  [dim]score {p.score:.4f}[/]")
        text = " ".join(p.text.split())
        out.print(f"    {text[:400]}{'…' if len(text) > 400 else ''}", highlight=False)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    user: Annotated[str, typer.Option("--user", "-u", help="Search as this user.")],
    groups: Annotated[str | None, typer.Option("--groups", "-g", help="Comma-separated.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="Passages to return.")] = 10,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search as a user: only passages that user may read, each with a citation."""
    settings, _ = _settings(config)
    principal = _principal(user, groups, tenant)
    if not query.strip():
        raise _fail("the query is empty")
    searcher = _open_searcher(settings)
    passages = searcher.search(query, principal, k=k)
    if as_json:
        out.print_json(data={"results": [p.to_dict() for p in passages]})
    else:
        _print_passages(passages)


@app.command("eval")
def evaluate_cmd(
    queries: Annotated[Path, typer.Option("--queries", "-q", help="Golden queries (JSONL).")],
    k: Annotated[int, typer.Option("-k", min=1, max=100)] = 10,
    mode: Annotated[
        str, typer.Option(help="hybrid, lexical or dense (to compare retrievers).")
    ] = "hybrid",
    stages: Annotated[
        bool,
        typer.Option(
            "--stages",
            help="Compare the ranking stages (fusion, rerank, diversify) through the "
            "retrieval service: what each adds or costs (JSON; same as `trove eval-stages`).",
        ),
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Measure retrieval quality, citation hits and permission leaks on golden queries."""
    if stages:
        from trove.commands.serve import eval_stages

        eval_stages(config=config, queries=queries, k=k)
        return
    settings, _ = _settings(config)
    try:
        golden = load_queries(queries)
    except OSError as exc:  # an unreadable file (a bad line is an EvalError: exit 2 too)
        raise _fail(str(exc)) from exc
    if mode not in ("hybrid", "lexical", "dense"):
        raise _fail(f"unknown mode {mode!r} (valid: hybrid, lexical, dense)")
    searcher = _open_searcher(settings)
    index = searcher.index
    # The principal each search really runs as: the golden query's identity, with the
    # groups the directory adds. Judging leaks without them would flag every passage
    # a synced directory group grants.
    expanded: dict[str, Principal] = {}

    def principal_of(q) -> Principal:
        if q.id not in expanded:
            expanded[q.id] = searcher.expand(q.principal())
        return expanded[q.id]

    def run(q):
        return searcher.search(q.query, q.principal(), k=k, mode=mode)

    def may_read(q, passage) -> bool:
        # Judged from the ACL stored in the index, independently of the search path.
        records = index.get_chunks([passage.chunk_id])
        return bool(records) and records[0].acl.permits(principal_of(q))

    report = evaluate(golden, run, k=k, may_read=may_read).to_dict()
    report["mode"] = mode
    if as_json:
        out.print_json(data=report)
        return
    out.print(
        f"{report['queries']} queries ({mode}, k={k}): recall@{k} {_metric(report['recall@k'])}  "
        f"MRR@10 {_metric(report['mrr@10'])}  nDCG@10 {_metric(report['ndcg@10'])}  "
        f"citation hits {_metric(report['citation_hit_rate'])}  leaks {report['leaks']}  "
        f"p50 {report['latency_ms']['p50']:.1f} ms  p95 {report['latency_ms']['p95']:.1f} ms"
    )
    negative = report["negative"]
    if negative["questions"]:
        out.print(_negative_line(negative), highlight=False)


def _metric(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _negative_line(negative: dict) -> str:
    """How the negative questions (nothing relevant) were answered, for the text output."""
    if negative["low_confidence"] is None:
        returned = negative["questions"] - negative["empty_answers"]
        answered = f"{returned} answered with passages (low_confidence is not judged here)"
    else:
        answered = (
            f"{negative['low_confidence']} flagged low_confidence, "
            f"{negative['confident_answers']} answered confidently"
        )
    return (
        f"{negative['questions']} negative questions (ranking averages leave them out): "
        f"{negative['empty_answers']} answered with nothing, {answered}; "
        f"{negative['passages_returned']} passages returned, leaks {negative['leaks']}"
    )


@app.command()
def status(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Per source: last sync, documents, chunks, pending changes, failures, staleness vs SLA."""
    from trove.status import status_lines, status_report

    settings, _ = _settings(config)
    report = status_report(settings)
    if as_json:
        out.print_json(data=report.to_dict())
    else:
        _print_lines(status_lines(report))
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def demo(
    keep: Annotated[
        Path | None, typer.Option(help="Build the demo in this folder and keep it.")
    ] = None,
) -> None:
    """Ingest the bundled sample corpus and answer one question for two users."""
    from trove import demo as demo_data

    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="trove-demo-"))
    try:
        config_path = demo_data.prepare(workdir)
        out.print(f"[bold]Ingesting the demo corpus[/] into {workdir} …")
        report = _ingest(config_path, show_progress=sys.stderr.isatty())
        for name, s in report.sources.items():
            out.print(
                f"  {name}: {s.documents_seen} documents, {s.chunks_written} chunks, "
                f"{len(s.documents_failed)} failed"
            )
        settings = load_settings(config_path)
        searcher = _open_searcher(settings)
        out.print(f'\n[bold]Question:[/] "{demo_data.DEMO_QUESTION}"')
        for user in demo_data.DEMO_USERS:
            principal = Principal.of(user.user, user.groups)
            groups = ", ".join(user.groups)
            out.print(f"\n[bold green]As {user.user}[/] ({user.description}; groups: {groups})")
            _print_passages(searcher.search(demo_data.DEMO_QUESTION, principal, k=3))
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _register_command_modules() -> None:
    from trove.commands import register_all

    register_all(app)


_register_command_modules()
