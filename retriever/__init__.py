"""Retrieval: hybrid search with access filtering, prompt composition and citations."""
