"""Connector errors: a whole source cannot be read (one bad document is a failure record)."""

from __future__ import annotations

from core.errors import TroveError


class ConnectorError(TroveError):
    """The source cannot be listed or read; the message says which and why."""


class DocumentGone(ConnectorError):
    """``fetch`` found no such document any more (deleted, purged, or no longer visible)."""
