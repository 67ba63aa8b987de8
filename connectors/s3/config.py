"""``type: s3`` settings. Permissions come from the source's ACL rules (match `bucket/key`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from connectors.credentials import Secret
from core.config import StrictModel


class S3Config(StrictModel):
    bucket: str = Field(min_length=3, max_length=255)
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None  # MinIO and other S3-compatible stores
    addressing_style: Literal["auto", "virtual", "path"] = "auto"
    # Without keys, boto3's default chain applies (environment, profile, instance role).
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None  # temporary (STS) credentials only
    page_size: int = Field(default=1000, ge=1, le=1000)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> S3Config:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(
                "s3: set both `access_key_id` and `secret_access_key`, or neither "
                "(boto3's default credential chain)"
            )
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("s3: `session_token` needs `access_key_id` and `secret_access_key`")
        return self
