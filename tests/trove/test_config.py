from pathlib import Path

import pytest

from core.errors import ConfigError
from trove.config import load_settings

CONTRACT_YAML = """
index: {backend: embedded, path: .trove/index}
embedding: {model: all-MiniLM-L6-v2}
sources:
  - name: handbook
    type: filesystem
    path: ./docs
    include: ["**/*"]
    exclude: []
    acl:
      default: {allow_groups: [all-staff]}
      rules:
        - {match: "security/**", allow_groups: [security]}
        - {match: "hr/**", allow_groups: [hr], deny_users: [mallory]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trove.yaml"
    path.write_text(text)
    return path


def test_contract_shape_loads_and_paths_resolve_against_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    settings = load_settings(write(tmp_path, CONTRACT_YAML))
    assert settings.index.backend == "embedded"
    assert settings.index.path == (tmp_path / ".trove/index").resolve()
    source = settings.source("handbook")
    assert source.path == (tmp_path / "docs").resolve()
    assert [r.match for r in source.acl.rules] == ["security/**", "hr/**"]
    assert source.acl.rules[1].deny_users == ["mallory"]
    assert source.acl.default.allow_groups == ["all-staff"]


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TROVE_INDEX__PATH", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("TROVE_EMBEDDING__BATCH_SIZE", "7")
    settings = load_settings(write(tmp_path, CONTRACT_YAML))
    assert settings.index.path == tmp_path / "elsewhere"
    assert settings.embedding.batch_size == 7


def test_config_from_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("TROVE_CONFIG", str(write(tmp_path, CONTRACT_YAML)))
    assert load_settings().sources[0].name == "handbook"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("index: {backend: solr}", "backend"),
        ("sources: [{name: a, path: x, acl: {rules: [{match: '', allow_groups: [g]}]}}]", "match"),
        ("sources: [{name: a, path: x}, {name: a, path: y}]", "repeated: a"),
        ("sources: [{name: a, path: x, colour: red}]", "colour"),
        ("- just\n- a list", "mapping"),
        ("index: {", "YAML"),
    ],
)
def test_invalid_configs_say_why(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_unknown_source_lists_the_known_ones(tmp_path):
    settings = load_settings(write(tmp_path, CONTRACT_YAML))
    with pytest.raises(ConfigError, match="known: handbook"):
        settings.source("wiki")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1.5h", 5400)]
)
def test_freshness_sla_durations(tmp_path, text, seconds):
    yaml_text = f"sources: [{{name: a, path: x, freshness_sla: '{text}', schedule: '0 * * * *'}}]"
    source = load_settings(write(tmp_path, yaml_text)).sources[0]
    assert source.freshness_sla.total_seconds() == seconds
    assert source.schedule == "0 * * * *"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("freshness_sla", "'two hours'", "not a duration"), ("schedule", "'daily'", "cron")],
)
def test_bad_freshness_settings_say_why(tmp_path, field, value, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, f"sources: [{{name: a, path: x, {field}: {value}}}]"))


def test_secrets_are_not_printed(tmp_path, monkeypatch):
    monkeypatch.setenv("TROVE_API__JWT_SECRET", "s3cret-value")
    settings = load_settings(write(tmp_path, CONTRACT_YAML))
    assert settings.api.jwt_secret.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(settings)


def test_embedding_backend_defaults_to_the_measured_choice_and_gpus_to_torch():
    from retrieval.embedding.config import EmbeddingConfig
    from retrieval.embedding.factory import DEFAULT_BACKEND

    assert EmbeddingConfig().backend == DEFAULT_BACKEND == "onnx-int8"
    # ONNX Runtime runs on the CPU only: naming a GPU without a backend picks torch ...
    assert EmbeddingConfig(device="cuda").backend == "torch"
    # ... while an explicit choice is kept (and refused later, with a reason).
    assert EmbeddingConfig(device="cuda", backend="onnx-int8").backend == "onnx-int8"
    assert EmbeddingConfig(backend="torch").backend == "torch"
