"""Settings shared by the connectors that retry (a retry budget), as written in ``trove.yaml``."""

from __future__ import annotations

from pydantic import Field

from core.config import StrictModel
from core.retry import RetryPolicy


class RetrySettings(StrictModel):
    """How hard to retry throttled or failing requests before the run records an error."""

    max_attempts: int = Field(default=8, ge=1, le=100)
    base_delay_s: float = Field(default=1.0, gt=0)
    max_delay_s: float = Field(default=60.0, gt=0)  # a Retry-After longer than this is capped
    max_total_s: float = Field(default=300.0, gt=0)  # per request, all retries together

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            base_delay_s=self.base_delay_s,
            max_delay_s=self.max_delay_s,
            max_total_s=self.max_total_s,
        )
