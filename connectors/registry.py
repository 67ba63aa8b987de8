"""Open the connector for a source: its scope, and its type's settings block (if any)."""

from __future__ import annotations

from connectors.base import Connector
from connectors.confluence.config import ConfluenceConfig
from connectors.s3.config import S3Config
from connectors.scope import SourceScope
from connectors.sharepoint.config import SharePointConfig
from connectors.web.config import WebConfig
from core.extras import require_extra

ConnectorSettings = ConfluenceConfig | SharePointConfig | S3Config | WebConfig
"""The ``<type>:`` block of a source; a filesystem source has none (its folder is in the scope)."""


def open_connector(scope: SourceScope, settings: ConnectorSettings | None = None) -> Connector:
    """The connector that ``settings`` is the block of (a filesystem one for ``None``).

    Each connector's module is imported only when a source of its type is opened,
    so a deployment without boto3 or msal can still read its other sources.
    """
    if settings is None:
        # lazy: a connector's SDK is an optional extra
        from connectors.filesystem import FilesystemConnector

        return FilesystemConnector(scope)
    if isinstance(settings, ConfluenceConfig):
        # lazy: a connector's SDK is an optional extra
        from connectors.confluence.connector import ConfluenceConnector

        return ConfluenceConnector(scope, settings)
    if isinstance(settings, SharePointConfig):
        require_extra("sharepoint", "msal", feature="the SharePoint connector")
        # lazy: a connector's SDK is an optional extra
        from connectors.sharepoint.connector import SharePointConnector

        return SharePointConnector(scope, settings)
    if isinstance(settings, S3Config):
        require_extra("s3", "boto3", feature="the S3 connector")
        # lazy: a connector's SDK is an optional extra
        from connectors.s3.connector import S3Connector

        return S3Connector(scope, settings)
    if isinstance(settings, WebConfig):
        require_extra("web", "protego", "defusedxml", feature="the web connector")
        # lazy: a connector's SDK is an optional extra
        from connectors.web.connector import WebConnector

        return WebConnector(scope, settings)
    raise ValueError(f"no connector reads settings of type {type(settings).__name__}")
