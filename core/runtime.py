"""Process-wide settings that keep Trove offline. Called at the edges (CLI, Dagster, tests)."""

from __future__ import annotations

import os

# unstructured pings an analytics host on import unless told not to; the hub
# libraries retry downloads for tens of seconds before failing offline.
OFFLINE_ENVIRONMENT = {
    "DO_NOT_TRACK": "1",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def configure_offline_environment() -> None:
    """Set the offline defaults unless the user set them already (idempotent)."""
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
