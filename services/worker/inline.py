"""Run jobs in this process on one background thread, in order: the queue without a broker.

For tests whose subject is not the queue (API behaviour, bad input): the same
``JobRunner`` the Celery tasks call, minus Celery. Production always uses Celery.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from services.worker.jobs import JobRunner


class InlineJobQueue:
    def __init__(self, runner: JobRunner):
        self._runner = runner
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inline-jobs")
        self.futures: list[Future] = []

    def enqueue(self, kind: str, job_id: str) -> None:
        run = {
            "ingest": self._runner.run_ingest,
            "delete": self._runner.run_delete,
            "acl": self._runner.run_acl,
        }[kind]
        self.futures.append(self._executor.submit(run, job_id))

    def check(self) -> None:
        """Always reachable: there is no broker."""

    def drain(self) -> None:
        """Wait for every job queued so far (re-raising a crash of the runner itself)."""
        for future in list(self.futures):
            future.result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
