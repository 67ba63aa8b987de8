"""What every configuration model shares: strictness and durations as people write them."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, overload

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A block of ``trove.yaml``: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@overload
def parse_duration(value: None) -> None: ...
@overload
def parse_duration(value: str | float | timedelta) -> timedelta: ...
@overload
def parse_duration(value: Any) -> timedelta | None: ...


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
