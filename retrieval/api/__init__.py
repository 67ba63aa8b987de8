"""The HTTP API: a thin FastAPI shell over :class:`retrieval.service.RetrievalService`."""
