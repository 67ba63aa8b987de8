"""`trove` maps a TroveError once, wherever a command lets it through: `error: <message>`
on one line of stderr and an exit status (2 for bad input, 1 for a failed run).
Anything else is a bug and keeps its traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.errors import ConnectorError
from core.errors import ConfigError, TroveError
from core.identity import InvalidIdentity
from retrieval.api.loadtest import LoadTestError
from retrieval.evaluate import EvalError
from retrieval.index.errors import IndexBackendError, IndexNotFoundError
from retrieval.index.opensearch.errors import RebuildError
from trove import cli
from trove.bench.corpus import CorpusUnavailableError
from trove.bench.errors import BenchError
from trove.commands import index as index_commands
from trove.ingest import IngestError

runner = CliRunner()


def _config(tmp_path: Path) -> str:
    path = tmp_path / "trove.yaml"
    path.write_text(
        f"index: {{backend: embedded, path: {tmp_path / 'index'}}}\n"
        f"state: {{path: {tmp_path / 'state'}}}\nsources: []\n"
    )
    return str(path)


class _NotCanonical(InvalidIdentity):
    """A subclass nobody listed: its nearest listed ancestor decides."""


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ConfigError, 2),
        (InvalidIdentity, 2),
        (_NotCanonical, 2),
        (EvalError, 2),
        (LoadTestError, 2),
        (BenchError, 2),
        (CorpusUnavailableError, 2),
        (IndexNotFoundError, 1),
        (IndexBackendError, 1),
        (ConnectorError, 1),
        (IngestError, 1),
        (TroveError, 1),
    ],
)
def test_exit_status_by_the_nearest_listed_class(error: type[TroveError], status: int) -> None:
    assert cli.exit_status(error("why")) == status


def test_a_missing_index_deep_in_search_is_one_line_and_status_1(tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["search", "leave", "--user", "alice", "-c", _config(tmp_path)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and str(tmp_path / "index") in line
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (RebuildError, 1),
        (IngestError, 1),
        (ConfigError, 2),
        (CorpusUnavailableError, 2),
    ],
)
def test_an_error_raised_inside_a_sub_command_is_mapped_by_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: type[TroveError], status: int
) -> None:
    # Longer than a terminal line: it must come out whole, on one line.
    message = "the new index holds 3 chunks of source 'hr', the manifest 4; " * 3

    def fails(*args: object, **kwargs: object) -> None:
        raise error(message)

    monkeypatch.setattr(index_commands, "rebuild_index", fails)
    result = runner.invoke(cli.app, ["index", "rebuild", "-c", _config(tmp_path)])
    assert result.exit_code == status
    assert isinstance(result.exception, SystemExit)
    assert result.stderr == f"error: {message}\n"


def test_an_error_outside_the_root_keeps_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(index_commands, "rebuild_index", fails)
    result = runner.invoke(cli.app, ["index", "rebuild", "-c", _config(tmp_path)])
    assert result.exit_code == 1
    assert isinstance(result.exception, KeyError)
    assert "error:" not in result.stderr
