"""Connector errors: a whole source cannot be read (one bad document is a failure record)."""


class ConnectorError(Exception):
    """The source cannot be listed or read; the message says which and why."""


class DocumentGone(ConnectorError):
    """``fetch`` found no such document any more (deleted, purged, or no longer visible)."""
