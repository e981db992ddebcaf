"""Retrieval: hybrid search (keyword + vector, fused), safe filters, reranking, stop words."""
