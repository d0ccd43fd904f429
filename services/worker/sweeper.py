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
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from services.db import Job, utcnow
from services.worker.leases import lease_expired

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
        with self._sessions() as session:
            rows = session.execute(
                select(Job.id, Job.kind).where(lease_expired(utcnow(), self._lease_s))
            ).all()
        return self._send(rows)

    def requeue_unfinished(self) -> list[str]:
        """Re-enqueue every queued or running job (the embedded broker's one worker starting).

        Running jobs get their lease expired first: their worker was this one, before it died.
        """
        expired = utcnow() - timedelta(seconds=self._lease_s + 1)
        with self._sessions.begin() as session:
            session.execute(update(Job).where(Job.state == "running").values(started_at=expired))
            rows = session.execute(
                select(Job.id, Job.kind).where(Job.state.in_(("queued", "running")))
            ).all()
        return self._send(rows)

    def _send(self, rows: list) -> list[str]:
        for job_id, kind in rows:
            log.warning(
                "re-enqueueing %s job %s: its worker stopped before finishing", kind, job_id
            )
            self._enqueue(kind, job_id)
        return [job_id for job_id, _ in rows]


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
