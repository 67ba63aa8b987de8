"""Connector errors: a whole source cannot be read (one bad document is a failure record)."""


class ConnectorError(Exception):
    """The source cannot be listed or read; the message says which and why."""
