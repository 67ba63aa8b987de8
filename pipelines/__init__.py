"""Ingestion stages as plain typed functions: parse -> chunk -> secure -> embed -> write."""
