"""Retrieval: the index contract and everything that reads it (search, fusion, citations)."""
