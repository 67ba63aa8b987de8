"""Open the connector a source's ``type`` names."""

from __future__ import annotations

from connectors.base import Connector
from pipelines.config import SourceConfig


def open_connector(config: SourceConfig) -> Connector:
    """The connector for one configured source (imports only what that type needs)."""
    if config.type == "filesystem":
        from connectors.filesystem import FilesystemConnector

        return FilesystemConnector(config)
    if config.type == "confluence":
        from connectors.confluence.connector import ConfluenceConnector

        return ConfluenceConnector(config)
    if config.type == "sharepoint":
        from connectors.sharepoint.connector import SharePointConnector

        return SharePointConnector(config)
    if config.type == "s3":
        from connectors.s3.connector import S3Connector

        return S3Connector(config)
    if config.type == "web":
        from connectors.web.connector import WebConnector

        return WebConnector(config)
    raise ValueError(f"unknown source type {config.type!r}")
