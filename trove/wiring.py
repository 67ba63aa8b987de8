"""Wiring: builds the index, embedder, directory and searcher from Settings."""
