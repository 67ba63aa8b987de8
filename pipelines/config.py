"""Configuration of ingestion: a source (where, which documents, who may read them,
limits, personal data, prompt injection), chunking, and the staging state."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from connectors.confluence.config import ConfluenceConfig
from connectors.registry import ConnectorSettings
from connectors.s3.config import S3Config
from connectors.scope import SourceScope
from connectors.settings import RetrySettings
from connectors.sharepoint.config import SharePointConfig
from connectors.web.config import WebConfig
from core.acl_config import SourceAclConfig
from core.acl_policy import AclPolicy
from core.config import StrictModel, parse_duration


class LimitsConfig(StrictModel):
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


class PiiConfig(StrictModel):
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


class InjectionConfig(StrictModel):
    """Prompt-injection screening: flag suspect chunks (risk in results) or drop them."""

    policy: Literal["flag", "drop"] = "flag"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)


SOURCE_TYPES = ("filesystem", "confluence", "sharepoint", "s3", "web")
SourceType = Literal["filesystem", "confluence", "sharepoint", "s3", "web"]


class SourceConfig(StrictModel):
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
    def connector_settings(self) -> ConnectorSettings | None:
        """The block of settings for this source's type (``None`` for a filesystem)."""
        return None if self.type == "filesystem" else getattr(self, self.type)

    def scope(self) -> SourceScope:
        """What the connector is told besides :attr:`connector_settings` (connectors.scope)."""
        return SourceScope(
            name=self.name,
            max_bytes=self.limits.max_bytes,
            include=tuple(self.include),
            exclude=tuple(self.exclude),
            retry=self.retry.policy(),
            acl=AclPolicy.from_config(self.acl),
            root=self.path,
            follow_symlinks=self.follow_symlinks,
        )

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


class ChunkingConfig(StrictModel):
    # Counted with the embedding model's own tokenizer; the context prefix
    # (title and section path) and the chunk together stay within the model's
    # maximum sequence length.
    max_tokens: int = Field(default=200, ge=16, le=8192)
    min_tokens: int = Field(default=24, ge=0)


class StateConfig(StrictModel):
    # Durable staging storage for the pipeline stages (manifest, parsed text,
    # chunks, embedding cache) and the Dagster instance used by `trove ingest`.
    path: Path = Path(".trove/state")
