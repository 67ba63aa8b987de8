"""`trove groups expand` shows the canonical identity and refuses a name that has none."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from trove import cli


def _config(tmp_path: Path) -> str:
    path = tmp_path / "trove.yaml"
    path.write_text(
        f"index: {{backend: embedded, path: {tmp_path / 'index'}}}\n"
        f"state: {{path: {tmp_path / 'state'}}}\nsources: []\n"
    )
    return str(path)


def test_expand_reports_the_canonical_user(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli.app, ["groups", "expand", "--user", " Mallory\t", "-c", _config(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["user"] == "mallory"


def test_expand_refuses_a_zero_width_name_without_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli.app, ["groups", "expand", "--user", "mal\u200blory", "-c", _config(tmp_path)]
    )
    assert result.exit_code == 2
    assert "U+200B" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
