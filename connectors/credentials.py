"""Credentials from the environment or a file — never from the YAML itself, never logged."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from connectors.errors import ConnectorError


class Secret(BaseModel):
    """Where a secret is read from: ``env: NAME`` or ``file: /path`` (exactly one)."""

    model_config = ConfigDict(extra="forbid")

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Secret:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret needs exactly one of `env` (a variable name) or `file`")
        return self

    def where(self) -> str:
        return f"environment variable {self.env}" if self.env else f"file {self.file}"

    def read(self) -> str:
        """The secret's value; a :class:`ConnectorError` saying where it looked when missing."""
        if self.env is not None:
            value = os.environ.get(self.env, "")
        else:
            try:
                value = Path(self.file).read_text(encoding="utf-8")  # type: ignore[arg-type]
            except OSError as exc:
                raise ConnectorError(f"cannot read secret {self.where()}: {exc.strerror}") from exc
        value = value.strip()
        if not value:
            raise ConnectorError(f"secret not set: {self.where()} is empty or missing")
        return value

    def __repr__(self) -> str:  # the location only, never the value
        return f"Secret({self.where()})"
