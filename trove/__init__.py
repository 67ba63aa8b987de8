"""Trove: permission-filtered, citable knowledge for AI agents."""

__version__ = "0.1.0"
