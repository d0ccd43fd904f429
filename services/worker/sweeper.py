"""Re-enqueue jobs whose worker died, so a killed worker never strands a document.

Brokers differ in what survives a dead worker: Redis keeps an unacknowledged message and
hands it out again after its visibility timeout (set to the job lease), but kombu's
SQLite transport marks a delivered message invisible for good. The job rows in SQL are
the truth for both, so the sweeper works from them: a job still ``running`` after its
lease is sent to its queue again (the worker's compare-and-set claim makes a duplicate
message harmless). On the embedded broker there is exactly one worker, so when it starts
every unfinished job is orphaned or waiting, and all are sent again at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import sessionmaker

from services.db import Job, utcnow
from services.worker.leases import attempts_so_far, lease_expired, retry_note

log = logging.getLogger(__name__)

Enqueue = Callable[[str, str], None]  # (kind, job_id)


class JobSweeper:
    """Finds abandoned jobs in SQL and hands them back to the queue."""

    def __init__(self, sessions: sessionmaker, enqueue: Enqueue, lease_s: float):
        self._sessions = sessions
        self._enqueue = enqueue
        self._lease_s = lease_s

    def sweep(self) -> list[str]:
        """Re-enqueue running jobs past their lease; returns their ids."""
        return self._requeue(lease_expired(utcnow(), self._lease_s))

    def requeue_unfinished(self) -> list[str]:
        """Re-enqueue every queued or running job (the embedded broker's one worker starting).

        Running jobs were this worker's, before it died: they count as a failed attempt.
        """
        # Queued first: a running job moved back to queued must not be sent twice.
        return self._requeue(Job.state == "queued") + self._requeue(Job.state == "running")

    def _requeue(self, condition: ColumnElement[bool]) -> list[str]:
        """Move matching jobs back to ``queued`` (noting a died attempt) and send them again.

        The move is a compare-and-set per job, so two sweepers never both send one job, and
        a job is sent once per death rather than once per sweep.
        """
        with self._sessions() as session:
            rows = session.execute(
                select(Job.id, Job.kind, Job.state, Job.error).where(condition)
            ).all()
        sent = []
        for job_id, kind, state, note in rows:
            if state == "running":
                with self._sessions.begin() as session:
                    moved = session.execute(
                        update(Job)
                        .where(Job.id == job_id, condition)
                        .values(
                            state="queued",
                            stage="queued again",
                            error=retry_note(attempts_so_far(note) + 1),
                        )
                        .execution_options(synchronize_session=False)
                    ).rowcount
                if not moved:
                    continue
                log.warning(
                    "re-enqueueing %s job %s: its worker stopped before finishing", kind, job_id
                )
            self._enqueue(kind, job_id)
            sent.append(job_id)
        return sent


def start_sweeping(sweeper: JobSweeper, interval_s: float) -> threading.Event:
    """Sweep every ``interval_s`` on a daemon thread; set the returned event to stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                sweeper.sweep()
            except Exception:  # noqa: BLE001 - a DB or broker outage must not end the loop
                log.exception("sweeping abandoned jobs failed; trying again later")

    threading.Thread(target=loop, name="job-sweeper", daemon=True).start()
    return stop
