"""Embedders: the model that turns passages and queries into vectors, on torch or ONNX Runtime."""
