"""When a running job counts as abandoned, and how many times one may be retried.

A job row in ``running`` state holds a lease of ``job_lease_s`` from its ``started_at``:
a live worker finishes (or its time limit fails it) within the lease, so a job still
``running`` after it was abandoned by a worker that died (SIGKILL, OOM, power). Workers
may then claim it again; the sweeper re-enqueues it. The attempt count lives in the job's
``error`` note while it is retried (no schema change) and is cleared when it finishes.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_

from services.db import Job

MAX_ATTEMPTS = 3
_NOTE = re.compile(r"^retrying: the worker stopped during attempt (\d+)")


def retry_note(attempt: int) -> str:
    """Note kept in ``Job.error`` while a job is retried after ``attempt`` died."""
    return f"retrying: the worker stopped during attempt {attempt}"


def attempts_so_far(note: str | None) -> int:
    """How many attempts of a job died, from its retry note (0 without one)."""
    match = _NOTE.match(note or "")
    return int(match.group(1)) if match else 0


def lease_expired(now: datetime, lease_s: float) -> ColumnElement[bool]:
    """SQL: the job is running and its lease ran out (its worker is gone)."""
    return and_(Job.state == "running", Job.started_at < now - timedelta(seconds=lease_s))


def claimable(now: datetime, lease_s: float) -> ColumnElement[bool]:
    """SQL: a worker may start this job now (queued, or running with an expired lease)."""
    return or_(Job.state == "queued", lease_expired(now, lease_s))
