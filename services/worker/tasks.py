"""The Celery task bodies: thin wrappers that hand a job id to the ``JobRunner``.

The runner (and through it the ingest pipeline and its embedding model) is built on
the first task a process runs, not at import, so forking and start-up stay cheap.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from services.worker.task_names import ACL_TASK, DELETE_TASK, INGEST_TASK

if TYPE_CHECKING:
    from celery import Celery, Task

    from services.settings import Settings
    from services.worker.jobs import JobRunner


# Back-off of an ingest waiting for an unreachable store (Chroma server, PostgreSQL).
STORE_RETRY_BASE_S, STORE_RETRY_MAX_S = 2.0, 60.0


class LazyRunner:
    """Builds one ``JobRunner`` per process on first use (after a prefork fork, not before)."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._runner: JobRunner | None = None
        self._lock = threading.Lock()

    def get(self) -> JobRunner:
        with self._lock:
            if self._runner is None:
                from services.worker.jobs import JobRunner

                self._runner = JobRunner.from_settings(self._settings)
            return self._runner


def register_tasks(app: Celery, settings: Settings) -> None:
    runner = LazyRunner(settings)
    app.enclave_runner = runner

    @app.task(name=INGEST_TASK, acks_late=True, reject_on_worker_lost=True, bind=True)
    def ingest_document(self: Task, job_id: str) -> str:
        outcome = runner.get().run_ingest(job_id)
        if outcome == "retry":  # a store is unreachable: try again later, without limit
            delay = min(STORE_RETRY_MAX_S, STORE_RETRY_BASE_S * 2 ** min(self.request.retries, 6))
            raise self.retry(countdown=delay, max_retries=None)
        return outcome

    @app.task(name=DELETE_TASK, acks_late=True, reject_on_worker_lost=True)
    def delete_document(job_id: str) -> str:
        return runner.get().run_delete(job_id)

    @app.task(name=ACL_TASK, acks_late=True, reject_on_worker_lost=True)
    def change_document_groups(job_id: str) -> str:
        return runner.get().run_acl(job_id)
