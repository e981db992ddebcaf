"""Sentence embeddings: the ONNX encoder and its process-wide instance."""

from stratus.embedding.encoder import OnnxEncoder, get_encoder, select_providers

__all__ = ["OnnxEncoder", "get_encoder", "select_providers"]
