"""Embedders: the model that turns passages and queries into vectors, on torch or ONNX Runtime.

``base`` holds the contract (:class:`~retrieval.embedding.base.Embedder`) and the helpers
both backends share; ``torch_backend`` and ``onnx_backend`` (with ``onnx_graph``)
implement it, importing ``base`` and never each other; ``factory`` picks one by the
configured name (``config``). ``tokens`` counts word pieces for the chunker.
"""
