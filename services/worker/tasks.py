"""The Celery task bodies: thin wrappers that hand a job id to the ``JobRunner``.

The runner (and through it the ingest pipeline and its embedding model) is built on
the first task a process runs, not at import, so forking and start-up stay cheap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from services.worker.task_names import ACL_TASK, DELETE_TASK, INGEST_TASK

if TYPE_CHECKING:
    from celery import Celery, Task

    from services.settings import Settings
    from services.worker.jobs import JobRunner


log = logging.getLogger(__name__)

# Back-off of a job waiting for an unreachable store (Chroma server, PostgreSQL).
STORE_RETRY_BASE_S, STORE_RETRY_MAX_S = 2.0, 60.0


def retry_delay(retries: int) -> float:
    """Seconds before the next try: doubling from STORE_RETRY_BASE_S, capped."""
    return min(STORE_RETRY_MAX_S, STORE_RETRY_BASE_S * 2 ** min(retries, 6))


def run_when_the_database_answers(task: Task, run: Callable[[str], str], job_id: str) -> str:
    """Run a job; if its database cannot be reached, send the task again after a back-off.

    Without this a job read that fails (PostgreSQL restarting under a busy worker) ended
    the task: the broker dropped the acknowledged message and the row stayed ``queued``
    with nothing left to run it (the sweeper only takes back ``running`` jobs).
    """
    from sqlalchemy.exc import OperationalError

    try:
        return run(job_id)
    except OperationalError as exc:
        reason = str(exc).splitlines()[0][:200]
        log.warning("job %s waits for the database: %s", job_id, reason)
        raise task.retry(countdown=retry_delay(task.request.retries), max_retries=None) from exc


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
        outcome = run_when_the_database_answers(self, runner.get().run_ingest, job_id)
        if outcome == "retry":  # a store is unreachable: try again later, without limit
            raise self.retry(countdown=retry_delay(self.request.retries), max_retries=None)
        return outcome

    @app.task(name=DELETE_TASK, acks_late=True, reject_on_worker_lost=True, bind=True)
    def delete_document(self: Task, job_id: str) -> str:
        return run_when_the_database_answers(self, runner.get().run_delete, job_id)

    @app.task(name=ACL_TASK, acks_late=True, reject_on_worker_lost=True, bind=True)
    def change_document_groups(self: Task, job_id: str) -> str:
        return run_when_the_database_answers(self, runner.get().run_acl, job_id)
