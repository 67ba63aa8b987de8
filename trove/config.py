"""Configuration: ``trove.yaml`` read into pydantic models, with ``TROVE_*`` overrides.

Precedence (highest first): environment variables ``TROVE_<SECTION>__<KEY>``
(for example ``TROVE_INDEX__PATH=/data/index``), then the YAML file, then the
defaults below. Relative paths in the file resolve against the file's folder,
so a config works from any working directory.

Settings are built at the edges (CLI, Dagster definitions) with
:func:`load_settings` and passed down as values; nothing below reads the
environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connectors.credentials import Secret
from core.errors import ConfigError
from pipelines.config import ChunkingConfig, SourceConfig, StateConfig
from retrieval.config import ApiConfig, RetrievalConfig
from retrieval.embedding.config import EmbeddingConfig
from retrieval.index.config import IndexConfig

DEFAULT_CONFIG_FILE = "trove.yaml"
CONFIG_ENV_VAR = "TROVE_CONFIG"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TROVE_", env_nested_delimiter="__", extra="forbid"
    )

    index: IndexConfig = Field(default_factory=IndexConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    sources: list[SourceConfig] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file; the file's values arrive as init kwargs.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _unique_source_names(self) -> Settings:
        # Case-insensitively: principal tokens ("{source}:group:{id}") are compared
        # case-folded, so sources `Wiki` and `wiki` would grant each other's groups.
        names = [s.name.casefold() for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        return self

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none configured"
        raise ConfigError(f"unknown source {name!r} (known: {known})")

    def resolved(self, base: Path) -> Settings:
        """A copy with every relative path made absolute against ``base``."""

        def fix(p: Path) -> Path:
            p = p.expanduser()
            return p if p.is_absolute() else (base / p).resolve()

        data = self.model_copy(deep=True)
        data.index.path = fix(data.index.path)
        data.state.path = fix(data.state.path)
        for section, names in (
            (data.index, ("ca_certs", "client_cert", "client_key")),
            (data.api, ("jwt_public_key_file", "jwks_file", "audit_log")),
        ):
            for name in names:
                if getattr(section, name) is not None:
                    setattr(section, name, fix(getattr(section, name)))
        for source in data.sources:
            if source.path is not None:
                source.path = fix(source.path)
            block = source.connector_settings
            for name in type(block).model_fields if block is not None else ():
                value = getattr(block, name)
                if isinstance(value, Secret) and value.file is not None:
                    setattr(block, name, value.model_copy(update={"file": fix(value.file)}))
        return data


def find_config(explicit: str | Path | None = None) -> Path:
    """The config file to use: ``explicit``, else ``$TROVE_CONFIG``, else ``./trove.yaml``."""
    candidate = explicit or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_FILE
    path = Path(candidate).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {path} "
            f"(pass --config, set {CONFIG_ENV_VAR}, or create {DEFAULT_CONFIG_FILE})"
        )
    return path.resolve()


def settings_from_dict(data: dict[str, Any], base: Path) -> Settings:
    try:
        settings = Settings(**data)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ConfigError(f"invalid configuration: {exc}") from exc
    return settings.resolved(base)


def load_settings(path: str | Path | None = None) -> Settings:
    """Read, validate and resolve a ``trove.yaml``; raise :class:`ConfigError` with the reason."""
    config_path = find_config(path)
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: the top level must be a mapping")
    return settings_from_dict(raw, base=config_path.parent)
