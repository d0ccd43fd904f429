"""Enclave's processes: the gateway, the Celery worker, the LLM server, settings and the DB."""
