"""Confluence Cloud: spaces, pages and attachments with their effective read permissions."""
