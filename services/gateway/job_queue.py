"""How the gateway hands jobs to workers: by task name over the Celery broker.

The gateway never imports the worker's task code; it sends ``enclave.ingest_document``
or ``enclave.delete_document`` with the job id to the named queue for that kind.
"""

from __future__ import annotations

from typing import Protocol

from celery import Celery

from services.worker.task_names import ACL_TASK, DELETE_TASK, INGEST_TASK


def _lost_queue_declaration_race(exc: BaseException) -> bool:
    """Whether ``exc`` is the embedded broker's duplicate insert of a queue's row."""
    text = str(exc)
    return "UNIQUE constraint failed" in text and "kombu_queue" in text


class JobQueue(Protocol):
    def enqueue(self, kind: str, job_id: str) -> None: ...

    def check(self) -> None:
        """Raise if the broker cannot be reached."""


class CeleryJobQueue:
    """Sends jobs to the Celery queues named in the settings."""

    def __init__(self, app: Celery, ingest_queue: str, delete_queue: str):
        self._app = app
        self._routes = {
            "ingest": (INGEST_TASK, ingest_queue),
            "delete": (DELETE_TASK, delete_queue),
            "acl": (ACL_TASK, delete_queue),
        }

    def enqueue(self, kind: str, job_id: str) -> None:
        task, queue = self._routes[kind]
        try:
            self._app.send_task(task, args=[job_id], queue=queue)
        except Exception as exc:  # noqa: BLE001 - only the one known race is retried
            if not _lost_queue_declaration_race(exc):
                raise
            # kombu's SQLAlchemy transport (the embedded broker) declares a queue with a
            # check-then-insert; when the worker declares the same queue at that moment the
            # insert fails with a UNIQUE violation. The queue exists now: send again.
            self._app.send_task(task, args=[job_id], queue=queue)

    def check(self) -> None:
        with self._app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
