"""Enclave's inference engine and the OpenAI-style client the rest of the system uses.

Nothing in here imports from ``services``, ``ingest`` or ``retriever``.
"""
