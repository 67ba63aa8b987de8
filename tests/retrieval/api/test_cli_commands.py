"""`trove token`, `trove tool-schema`, `trove serve` refusals and the threshold chooser."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from core.acl import Principal
from retrieval.auth import TokenVerifier
from tests.retrieval.api.helpers import SECRET, make_service
from tests.retrieval.token_fuzz import good_claims, signed
from trove.cli import app
from trove.commands.serve import best_threshold

runner = CliRunner()


def _config(tmp_path, api: str = "") -> str:
    path = tmp_path / "trove.yaml"
    path.write_text(f"index: {{path: {tmp_path / 'index'}}}\n{api}", encoding="utf-8")
    return str(path)


def test_token_is_signed_with_the_configured_secret(tmp_path):
    config = _config(tmp_path, f"api: {{jwt_secret: {SECRET}}}\n")
    result = runner.invoke(
        app,
        ["token", "--config", config, "--user", "dana", "--groups", "hr,all-staff", "-t", "acme"],
    )
    assert result.exit_code == 0, result.output
    principal = TokenVerifier(secret=SECRET).verify(result.output.strip())
    assert principal == Principal.of("dana", ["hr", "all-staff"], "acme")


def test_token_refusals(tmp_path):
    no_secret = runner.invoke(app, ["token", "--config", _config(tmp_path), "--user", "x"])
    assert no_secret.exit_code == 2 and "jwt_secret" in no_secret.output
    config = _config(tmp_path, f"api: {{jwt_secret: {SECRET}}}\n")
    bad_ttl = runner.invoke(app, ["token", "--config", config, "--user", "x", "--ttl", "soon"])
    assert bad_ttl.exit_code == 2 and "not a duration" in bad_ttl.output


def test_tool_schema_command(tmp_path):
    result = runner.invoke(app, ["tool-schema"])
    assert result.exit_code == 0
    assert json.loads(result.output)["function"]["name"] == "search_knowledge"
    runner.invoke(app, ["tool-schema", "-o", str(tmp_path / "s.json")])
    assert json.loads((tmp_path / "s.json").read_text())["type"] == "function"


def test_serve_refuses_to_start_without_a_key(tmp_path):
    result = runner.invoke(app, ["serve", "--config", _config(tmp_path)])
    assert result.exit_code == 1 and "no JWT verification key" in result.output


def test_best_threshold_separates_the_two_sets():
    best = best_threshold([0.5, 0.6, 0.7], [0.1, 0.2, 0.45])
    assert best == {"threshold": 0.475, "balanced_accuracy": 1.0}
    overlap = best_threshold([0.3, 0.6], [0.4, 0.1])
    assert overlap["balanced_accuracy"] == 0.75


def test_serve_refuses_asymmetric_keys_without_audience_and_issuer(tmp_path):
    """Issue 16.5: with a public key, tokens for any audience or issuer were accepted."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "idp.pem").write_bytes(pem)
    keyed = f"api: {{jwt_public_key_file: {tmp_path / 'idp.pem'}"
    for command in (["serve"], ["mcp", "--transport", "http"], ["mcp", "--token", "x.y.z"]):
        for api in (keyed + "}\n", keyed + ", jwt_audience: trove}\n"):
            result = runner.invoke(app, [*command, "--config", _config(tmp_path, api)])
            assert result.exit_code == 1, (command, result.output)
            assert "need api.jwt_audience and api.jwt_issuer" in result.output
            assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "bad",
    [
        signed({"alg": "HS256", "kid": 1}, good_claims(), SECRET),
        signed({"alg": "HS256", "crit": ["x"]}, good_claims(), SECRET),
        signed({"alg": "HS256"}, good_claims(sub="al\ud800ice"), SECRET),
        "not-a-token",
    ],
)
def test_mcp_stdio_with_a_bad_token_is_a_clear_error(tmp_path, monkeypatch, bad):
    import trove.commands.serve as serve_commands

    service = make_service(tmp_path)
    monkeypatch.setattr(serve_commands, "_service", lambda settings: service)
    config = _config(tmp_path, f"api: {{jwt_secret: {SECRET}}}\n")
    result = runner.invoke(app, ["mcp", "--config", config, "--token", bad])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "the MCP caller's token was refused" in result.output
    assert bad not in result.output
