"""Connectors: list what changed in a source system and hand over raw documents. No parsing."""
