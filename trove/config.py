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
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connectors.confluence.config import ConfluenceConfig
from connectors.credentials import Secret
from connectors.s3.config import S3Config
from connectors.settings import RetrySettings
from connectors.sharepoint.config import SharePointConfig
from connectors.web.config import WebConfig
from trove.acl import Acl
from trove.identity import (
    InvalidIdentity,
    canonical_group,
    canonical_tenant,
    canonical_user,
)

DEFAULT_CONFIG_FILE = "trove.yaml"
CONFIG_ENV_VAR = "TROVE_CONFIG"


class ConfigError(ValueError):
    """The configuration file is missing or invalid; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AclSpec(_Strict):
    """Read permissions as written in ``trove.yaml``."""

    allow_users: list[str] = Field(default_factory=list)
    allow_groups: list[str] = Field(default_factory=list)
    deny_users: list[str] = Field(default_factory=list)
    deny_groups: list[str] = Field(default_factory=list)
    tenant: str | None = None
    public: bool = False

    @model_validator(mode="after")
    def _names_have_a_canonical_form(self) -> AclSpec:
        # At ingest such a name would be dropped (allow) or shut the ACL to everyone
        # (deny, tenant): a config error naming the rule says why instead.
        match = getattr(self, "match", None)
        where = f"ACL rule {match!r}" if match is not None else "ACL"
        checks = (
            (canonical_user, ("allow_users", "deny_users")),
            (canonical_group, ("allow_groups", "deny_groups")),
        )
        for canonical, fields in checks:
            for name in fields:
                for value in getattr(self, name):
                    if value.strip():
                        _check_identity(canonical, value, f"{where}: {name} entry {value!r}")
        if self.tenant:
            _check_identity(canonical_tenant, self.tenant, f"{where}: tenant {self.tenant!r}")
        return self

    def to_acl(self) -> Acl:
        return Acl(
            allow_users=frozenset(self.allow_users),
            allow_groups=frozenset(self.allow_groups),
            deny_users=frozenset(self.deny_users),
            deny_groups=frozenset(self.deny_groups),
            tenant=self.tenant,
            public=self.public,
        )


def _check_identity(canonical: Callable[[object], str], value: str, where: str) -> None:
    try:
        canonical(value)
    except InvalidIdentity as exc:
        raise ValueError(f"{where}: {exc}") from None


class AclRule(AclSpec):
    """An ACL for the documents whose path (relative to the source root) matches ``match``."""

    match: str

    @field_validator("match")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("an ACL rule needs a non-empty `match` glob")
        return value


class SourceAclConfig(_Strict):
    """Rules are tried in order and the first match wins; no match falls to ``default``.

    Without ``default``, a document that no rule matches gets an empty ACL and is
    never retrievable (fail closed).
    """

    default: AclSpec | None = None
    rules: list[AclRule] = Field(default_factory=list)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: Any) -> timedelta | None:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"1w"``, a number of seconds, or a timedelta."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(
            f"not a duration: {value!r} (use a number and a unit: 90s, 15m, 2h, 1d, 1w)"
        )
    return timedelta(**{_DURATION_UNITS[match.group(2)]: float(match.group(1))})


class LimitsConfig(_Strict):
    """Per-document limits; a document over any of them is quarantined with the reason."""

    max_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    max_pages: int = Field(default=2_000, ge=1)
    max_chars: int = Field(default=5_000_000, ge=1)  # parsed text
    max_elements: int = Field(default=100_000, ge=1)
    max_line_chars: int = Field(default=1_000_000, ge=1)  # longer lines are hard-wrapped
    timeout_s: float = Field(default=120.0, gt=0)  # wall clock; the parser process is killed
    # Archives (docx, pptx, xlsx, odt, epub): zip-bomb guards checked before parsing.
    max_archive_members: int = Field(default=10_000, ge=1)
    max_archive_uncompressed_bytes: int = Field(default=500 * 1024 * 1024, ge=1)
    max_compression_ratio: float = Field(default=200.0, gt=1)
    # OCR (scanned PDF pages, images), checked before anything is rendered or decoded.
    max_image_pixels: int = Field(default=90_000_000, ge=1)  # per page or image frame
    max_ocr_pages: int = Field(default=500, ge=1)  # pages to OCR in one document
    ocr_page_timeout_s: float = Field(default=60.0, gt=0)  # OCR budget per page...
    ocr_timeout_s: float = Field(default=1200.0, gt=0)  # ...and at most this per document


PII_TYPES = ("email", "phone", "us_ssn", "payment_card", "iban", "api_key", "private_key")


class PiiConfig(_Strict):
    """What to do with personal data and secrets found at ingestion."""

    # tag: keep the text, record findings; redact: typed placeholders before
    # embedding and storage; drop: skip the chunk.
    policy: Literal["tag", "redact", "drop"] = "tag"
    types: list[str] = Field(default_factory=lambda: list(PII_TYPES))

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(PII_TYPES))
        if unknown:
            raise ValueError(f"unknown PII types {unknown} (valid: {', '.join(PII_TYPES)})")
        return value


class InjectionConfig(_Strict):
    """Prompt-injection screening: flag suspect chunks (risk in results) or drop them."""

    policy: Literal["flag", "drop"] = "flag"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)


SOURCE_TYPES = ("filesystem", "confluence", "sharepoint", "s3", "web")
SourceType = Literal["filesystem", "confluence", "sharepoint", "s3", "web"]


class SourceConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    type: SourceType = "filesystem"
    # Exactly the section named by `type` is set: `path` for a filesystem
    # source, otherwise the matching block of connector settings.
    path: Path | None = None
    # Filesystem only: follow symbolic links whose target is inside `path`
    # (off: links are reported and skipped). See docs/connectors.md.
    follow_symlinks: bool = False
    confluence: ConfluenceConfig | None = None
    sharepoint: SharePointConfig | None = None
    s3: S3Config | None = None
    web: WebConfig | None = None
    retry: RetrySettings = Field(default_factory=RetrySettings)
    include: list[str] = Field(default_factory=lambda: ["**/*"])
    exclude: list[str] = Field(default_factory=list)
    acl: SourceAclConfig = Field(default_factory=SourceAclConfig)
    # Freshness: a cron schedule for re-syncs, and how stale the source may get
    # before Dagster and `trove status` report it.
    schedule: str | None = None
    freshness_sla: timedelta | None = None
    # Group memberships (sources that have groups): their own cron schedule.
    groups_schedule: str | None = None
    # The id-only listing that finds deletions and permission changes runs at
    # most this often on incremental sources (every run when unset).
    permission_sync_interval: timedelta | None = None
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    # OCR of scanned PDF pages and images (pipelines/ocr.py): auto (pages without
    # text), always (every PDF page), off; languages are tesseract's codes.
    ocr: Literal["auto", "off", "always"] = "auto"
    ocr_languages: list[str] = Field(default_factory=lambda: ["eng"], min_length=1)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    injection: InjectionConfig = Field(default_factory=InjectionConfig)

    @model_validator(mode="after")
    def _one_section(self) -> SourceConfig:
        if self.type == "filesystem" and self.path is None:
            raise ValueError(f"source {self.name!r}: a filesystem source needs `path`")
        if self.type != "filesystem" and getattr(self, self.type) is None:
            raise ValueError(f"source {self.name!r}: type {self.type} needs a `{self.type}:` block")
        stray = [t for t in SOURCE_TYPES[1:] if t != self.type and getattr(self, t) is not None]
        if self.type != "filesystem" and self.path is not None:
            stray.insert(0, "path")
        if self.type != "filesystem" and self.follow_symlinks:
            stray.append("follow_symlinks")
        if stray:
            raise ValueError(f"source {self.name!r} is type {self.type}; remove {', '.join(stray)}")
        return self

    @property
    def connector_settings(self) -> Any:
        """The block of settings for this source's type (``None`` for a filesystem)."""
        return None if self.type == "filesystem" else getattr(self, self.type)

    @property
    def has_groups(self) -> bool:
        return self.type in ("confluence", "sharepoint")

    @field_validator("permission_sync_interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> timedelta | None:
        return parse_duration(value)

    @field_validator("freshness_sla", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta | None:
        return parse_duration(value)

    @field_validator("schedule", "groups_schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5:
            raise ValueError(f"schedule must be a 5-field cron expression, got {value!r}")
        return value

    @field_validator("ocr_languages")
    @classmethod
    def _tesseract_codes(cls, value: list[str]) -> list[str]:
        # Whether the data is installed is checked where OCR runs (needs_ocr otherwise).
        bad = [code for code in value if not re.fullmatch(r"[A-Za-z0-9_]+", code)]
        if bad:
            raise ValueError(f"ocr_languages must be tesseract codes (eng, deu...), got {bad}")
        return value


class OpenSearchAuthConfig(_Strict):
    """Basic auth (``username``/``password``) or AWS SigV4 (``aws_region``); never logged."""

    username: str | None = None
    password: SecretStr | None = None  # prefer TROVE_INDEX__AUTH__PASSWORD
    aws_region: str | None = None
    aws_service: Literal["es", "aoss"] = "es"


class IndexConfig(_Strict):
    backend: Literal["embedded", "opensearch"] = "embedded"
    # embedded backend
    path: Path = Path(".trove/index")
    # The dense first pass: "auto" = torch's private int8 kernel where a child
    # process verified it, else numpy; "numpy" never uses torch (docs/dense-kernel.md).
    dense_kernel: Literal["auto", "numpy"] = "auto"
    # opensearch backend
    hosts: list[str] = Field(default_factory=lambda: ["http://localhost:9200"])
    index_prefix: str = Field(default="trove", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    auth: OpenSearchAuthConfig = Field(default_factory=OpenSearchAuthConfig)
    verify_certs: bool = True
    ca_certs: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    knn_engine: Literal["lucene", "faiss"] = "lucene"
    hybrid_combination: Literal["normalization", "rrf"] = "normalization"
    pagination_depth: int = Field(default=100, ge=1, le=10000)
    # HNSW candidate queue of every k-NN query (None: the engine's default, k). 100
    # from measurement: a bare top 10 found 0.89-0.93 of the exact top 10 at Lucene's
    # default, 1.0 with 100 (docs/benchmarks.md, "OpenSearch side by side").
    knn_ef_search: int | None = Field(default=100, ge=1, le=10000)
    number_of_shards: int = Field(default=1, ge=1, le=1024)
    number_of_replicas: int = Field(default=1, ge=0, le=32)  # 0 on a single-node cluster


class EmbeddingConfig(_Strict):
    model: str = "all-MiniLM-L6-v2"
    # "onnx-int8" (default): the model on ONNX Runtime, documents with dynamic
    # int8 weights, queries in fp32. Chosen by measurement: 2.1-2.5x torch's
    # document throughput (1.7x end to end), 4x faster query embedding,
    # nDCG@10 within 0.002 of torch on both golden sets (docs/benchmarks.md,
    # "Embedding backends"). "torch": sentence-transformers, for GPUs.
    backend: Literal["torch", "onnx-int8"] = "onnx-int8"  # = pipelines.embed.DEFAULT_BACKEND
    batch_size: int = Field(default=32, ge=1, le=1024)
    device: str = "cpu"

    @model_validator(mode="before")
    @classmethod
    def _gpu_means_torch(cls, data: Any) -> Any:
        # ONNX Runtime runs on the CPU here: a GPU device without a backend
        # named means torch, rather than an error about a default nobody chose.
        gpu = isinstance(data, dict) and str(data.get("device", "cpu")) != "cpu"
        if gpu and "backend" not in data:
            return {**data, "backend": "torch"}
        return data


class ChunkingConfig(_Strict):
    # Counted with the embedding model's own tokenizer; the context prefix
    # (title and section path) and the chunk together stay within the model's
    # maximum sequence length.
    max_tokens: int = Field(default=200, ge=16, le=8192)
    min_tokens: int = Field(default=24, ge=0)


class RetrievalConfig(_Strict):
    # Chosen by measurement over every golden set at once (docs/benchmarks.md,
    # "Retrieval quality"): document-level z-score fusion at 0.55 dense over 100
    # candidates, one passage per document, had the best worst-set nDCG@10
    # (`trove bench quality`).
    fusion: Literal["rrf", "blend", "zscore"] = "zscore"
    rrf_k: int = Field(default=60, ge=1)
    # Weight of the dense retriever in fusion (lexical gets 1 - dense_weight).
    dense_weight: float = Field(default=0.55, ge=0.0, le=1.0)
    # How many candidates each retriever contributes before fusion.
    candidates: int = Field(default=100, ge=1, le=1000)
    # Fuse per document: a document ranks by its best passage in each retriever's
    # list (retrieval.fusion.fuse_by_document); False fuses passage by passage.
    document_fusion: bool = True
    # At most this many passages of one document in a first-stage search's top k
    # (`trove search`, `trove eval`, Searcher.search); None: no cap. The service
    # caps with max_passages_per_document instead, after merging adjacent chunks.
    search_max_per_document: int | None = Field(default=1, ge=1)
    # Rerank after fusion: a sentence-transformers CrossEncoder (local path or
    # name) when set, otherwise a default that needs no extra model weights.
    reranker: str | None = None
    rerank: bool = True
    max_passages_per_document: int = Field(default=3, ge=1)
    merge_adjacent: bool = True
    # Below this best score a search is flagged `low_confidence`.
    low_confidence_threshold: float | None = None


class ApiConfig(_Strict):
    """The HTTP API and MCP server: JWT verification, limits, audit log."""

    jwt_secret: SecretStr | None = None  # HS256; also TROVE_API__JWT_SECRET
    jwt_public_key_file: Path | None = None  # RS256 PEM
    jwks_file: Path | None = None  # RS256 JWKS (keys chosen by `kid`)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    max_body_bytes: int = Field(default=65_536, ge=1024)
    max_query_chars: int = Field(default=2_000, ge=1)
    rate_limit_per_minute: int = Field(default=120, ge=1)
    # Failed authentications (401) per client address per minute before its 429s.
    unauthenticated_rate_limit_per_minute: int = Field(default=60, ge=1)
    audit_log: Path | None = Path(".trove/audit.jsonl")
    audit_log_queries: bool = False  # raw query text in the audit log (off: a hash only)
    # Searches answered at once per server process; the rest wait for a slot. None:
    # one per CPU core (measured best on 2 cores, docs/benchmarks.md).
    max_concurrent_searches: int | None = Field(default=None, ge=1)

    @field_validator("audit_log", "jwt_public_key_file", "jwks_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # `TROVE_API__AUDIT_LOG=` (empty) means "no audit log", not "the config folder".
        return None if isinstance(value, str) and not value.strip() else value


class StateConfig(_Strict):
    # Durable staging storage for the pipeline stages (manifest, parsed text,
    # chunks, embedding cache) and the Dagster instance used by `trove ingest`.
    path: Path = Path(".trove/state")


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
