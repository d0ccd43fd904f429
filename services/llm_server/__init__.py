"""OpenAI-compatible LLM server over a pluggable backend (our engine, HF reference, or a remote server).

Entry points: ``python -m services.llm_server`` and ``services.llm_server.app.create_app``.
"""
