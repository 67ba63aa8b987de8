"""One router per resource, assembled in :func:`retrieval.api.app.create_app`."""
