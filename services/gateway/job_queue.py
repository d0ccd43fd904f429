"""How the gateway hands jobs to workers: by task name over the Celery broker.

The gateway never imports the worker's task code; it sends ``enclave.ingest_document``
or ``enclave.delete_document`` with the job id to the named queue for that kind
(``services.worker.app.job_routes``, the table the worker's sweeper sends by too).
"""

from __future__ import annotations

from typing import Protocol

from celery import Celery

from services.worker.app import job_routes, send_job


class JobQueue(Protocol):
    def enqueue(self, kind: str, job_id: str) -> None: ...

    def check(self) -> None:
        """Raise if the broker cannot be reached."""


class CeleryJobQueue:
    """Sends jobs to the Celery queues named in the settings."""

    def __init__(self, app: Celery, ingest_queue: str, delete_queue: str):
        self._app = app
        self._routes = job_routes(ingest_queue, delete_queue)

    def enqueue(self, kind: str, job_id: str) -> None:
        send_job(self._app, self._routes, kind, job_id)

    def check(self) -> None:
        with self._app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
