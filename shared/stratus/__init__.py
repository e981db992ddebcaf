"""Stratus: serverless retrieval-augmented generation on AWS."""

__version__ = "0.1.0"
