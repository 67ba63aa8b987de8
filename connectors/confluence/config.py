"""``type: confluence`` settings."""

from __future__ import annotations

from pydantic import Field

from connectors.credentials import Secret
from core.config import StrictModel


class ConfluenceConfig(StrictModel):
    # The site's wiki root, e.g. https://acme.atlassian.net/wiki
    url: str
    email: str  # the API user; the token is read from `api_token`
    api_token: Secret
    # Space keys; empty: every current space except personal ones (skipped ones are logged).
    spaces: list[str] = Field(default_factory=list)
    include_attachments: bool = True
    page_limit: int = Field(default=100, ge=1, le=250)
    # CQL is minute-granular, in the API user's time zone: re-read this much
    # before the last watermark and de-duplicate on (id, version).
    overlap_minutes: int = Field(default=10, ge=0)
    timezone_offset_minutes: int = 0  # the API user's UTC offset, for CQL dates
