"""Celery task names: the contract between the gateway (sends by name) and the worker (runs them).

A module of its own so that the app factory, the task bodies and the gateway's queue all
import the names without importing each other.
"""

INGEST_TASK = "enclave.ingest_document"
DELETE_TASK = "enclave.delete_document"
ACL_TASK = "enclave.change_document_groups"
