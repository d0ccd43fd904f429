"""Run one ingest or delete job: drive the pipeline, mirror its progress into the job row.

This is the worker's logic without Celery, so a test that is not about the queue can
run a job in-process. Invariants: a job ends ``done`` or ``failed`` with a message; a
failed ingest leaves no chunk anywhere (the pipeline cleans its stores, we remove the
SQL rows and the upload); a delete removes the document from every store.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Text, cast, delete, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from services.db import Chunk, Document, Job, Message, make_engine, session_factory, utcnow
from services.settings import Settings
from services.worker.leases import MAX_ATTEMPTS, attempts_so_far, claimable, retry_note

log = logging.getLogger(__name__)


class ProgressReporter:
    """Callable the pipeline reports to; writes the job's progress/stage, throttled."""

    def __init__(self, sessions: sessionmaker, job_id: str):
        self._sessions = sessions
        self._job_id = job_id
        self._last: tuple[float, str | None] = (-1.0, None)

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        fraction, stage = _parse_progress(args, kwargs)
        if fraction is None:
            fraction = max(self._last[0], 0.0)
        fraction = min(max(float(fraction), 0.0), 0.99)
        if stage == self._last[1] and fraction - self._last[0] < 0.02:
            return
        self._last = (fraction, stage)
        try:
            with self._sessions.begin() as session:
                job = session.get(Job, self._job_id)
                if job is not None and job.state == "running":
                    job.progress = max(job.progress, fraction)
                    if stage:
                        job.stage = stage[:100]
        except OperationalError as exc:  # the DB restarting must not fail the ingest itself
            log.warning("could not record progress of job %s: %s", self._job_id, exc)


def _parse_progress(args: tuple, kwargs: dict) -> tuple[float | None, str | None]:
    """Accept ``(fraction)``, ``(stage, fraction)``, ``(fraction, stage)`` or keywords."""
    fraction = kwargs.get("fraction", kwargs.get("progress"))
    stage = kwargs.get("stage")
    for value in args:
        if isinstance(value, int | float) and not isinstance(value, bool):
            fraction = value
        elif isinstance(value, str):
            stage = value
        elif hasattr(value, "fraction") or hasattr(value, "stage"):
            fraction = getattr(value, "fraction", fraction)
            stage = getattr(value, "stage", stage)
    return fraction, stage


class JobRunner:
    """Executes jobs against one pipeline and one database."""

    def __init__(self, sessions: sessionmaker, pipeline: Any, lease_s: float = 960.0):
        self._sessions = sessions
        self._pipeline = pipeline
        self._lease_s = lease_s

    @classmethod
    def from_settings(cls, settings: Settings) -> JobRunner:
        from services.components import create_pipeline

        engine = make_engine(settings.resolved_database_url)
        return cls(
            session_factory(engine), create_pipeline(settings, sandboxed=True), settings.job_lease_s
        )

    def _start(self, job_id: str, kind: str) -> tuple[Job, Document] | None:
        """Claim the job for this worker, or None when it must not run here.

        Claiming is one compare-and-set UPDATE, so when a message is delivered twice
        (broker redelivery after a worker died, plus the sweeper's re-enqueue) exactly one
        worker runs the job: ``queued`` may be claimed, ``running`` only once its lease has
        expired (its worker died), ``done``/``failed`` never.
        """
        now = utcnow()
        with self._sessions.begin() as session:
            job = session.get(Job, job_id)
            if job is None or job.kind != kind:
                log.warning("job %s (%s) not found; dropping the task", job_id, kind)
                return None
            was_running = job.state == "running"
            claimed = session.execute(
                update(Job)
                .where(Job.id == job_id, claimable(now, self._lease_s))
                .values(state="running", started_at=now, progress=0.0, stage="starting")
                .execution_options(synchronize_session=False)
            ).rowcount
            if not claimed:
                log.info("job %s is %s elsewhere or finished; skipping", job_id, job.state)
                return None
            session.refresh(job)
            attempt = attempts_so_far(job.error) + (1 if was_running else 0)
            if attempt >= MAX_ATTEMPTS:
                message = (
                    f"the worker stopped {attempt} times while running this job "
                    "(a crash, out of memory or a restart); giving up"
                )
                self._finish(session, job, "failed", message)
                document = session.get(Document, job.document_id)
                if document is not None and kind == "ingest":
                    document.status, document.error = "failed", message
                return None
            if attempt:
                job.error = retry_note(attempt)
            document = session.get(Document, job.document_id)
            if document is None:
                self._finish(session, job, "failed", f"document {job.document_id} no longer exists")
                return None
            if kind != "acl":  # a permission change leaves the document readable as it was
                document.status = "processing" if kind == "ingest" else "deleting"
            return job, document

    @staticmethod
    def _finish(session: Any, job: Job, state: str, error: str | None = None) -> None:
        job.state, job.error, job.finished_at = state, error, utcnow()
        if state == "done":
            job.progress, job.stage = 1.0, "done"

    def run_ingest(self, job_id: str) -> str:
        """Parse, chunk, embed and index the job's document; returns the final state."""
        from ingest.errors import IngestError, StoreUnavailable

        started = self._start(job_id, "ingest")
        if started is None:
            return "skipped"
        _, document = started
        try:
            chunks = self._pipeline.ingest(
                Path(document.stored_path),
                document_id=document.id,
                title=document.title,
                groups=list(document.groups or []),
                progress=ProgressReporter(self._sessions, job_id),
            )
        except StoreUnavailable as exc:
            return self._wait_for_stores(job_id, document.id, str(exc))
        except IngestError as exc:
            message = _user_facing(str(exc), document)
            return self._fail_ingest(job_id, document.id, message, clean_stores=False)
        except Exception as exc:  # noqa: BLE001 - any crash must still end the job cleanly
            log.exception("ingest of %s crashed", document.id)
            message = _user_facing(f"internal error while ingesting: {exc}", document)
            return self._fail_ingest(job_id, document.id, message, clean_stores=True)
        try:
            with self._sessions.begin() as session:
                session.execute(delete(Chunk).where(Chunk.document_id == document.id))
                session.add_all(
                    Chunk(
                        id=c.chunk_id,
                        document_id=document.id,
                        ordinal=c.ordinal,
                        page=c.page,
                        section=(c.section or None) and str(c.section)[:500],
                        text=c.text,
                    )
                    for c in chunks
                )
                doc = session.get(Document, document.id)
                doc.status, doc.chunk_count, doc.error = "ready", len(chunks), None
                self._finish(session, session.get(Job, job_id), "done")
        except Exception as exc:  # noqa: BLE001
            log.exception("recording chunks of %s failed", document.id)
            return self._fail_ingest(
                job_id, document.id, f"could not record chunks: {exc}", clean_stores=True
            )
        return "done"

    def _wait_for_stores(self, job_id: str, document_id: str, message: str) -> str:
        """Put the job back in the queue state: a store outage is not the document's fault.

        Returns ``"retry"``; the task sends itself again after a back-off. Nothing of the
        document is marked done or ready, and the stores hold none of its chunks.
        """
        log.warning("ingest of %s waits: %s", document_id, message)
        with self._sessions.begin() as session:
            job = session.get(Job, job_id)
            if job is not None and job.state == "running":
                job.state, job.stage, job.progress = "queued", "waiting for the stores", 0.0
                job.error = message
            doc = session.get(Document, document_id)
            if doc is not None:
                doc.status = "queued"
        return "retry"

    def _fail_ingest(
        self, job_id: str, document_id: str, message: str, *, clean_stores: bool
    ) -> str:
        if clean_stores:
            try:
                self._pipeline.delete(document_id)
            except Exception:  # noqa: BLE001
                log.exception("cleaning stores after a failed ingest of %s", document_id)
        with self._sessions.begin() as session:
            session.execute(delete(Chunk).where(Chunk.document_id == document_id))
            doc = session.get(Document, document_id)
            if doc is not None:
                doc.status, doc.error, doc.chunk_count = "failed", message, 0
                Path(doc.stored_path).unlink(missing_ok=True)
            self._finish(session, session.get(Job, job_id), "failed", message)
        return "failed"

    def run_acl(self, job_id: str) -> str:
        """Rewrite every chunk's ACL in both stores, then record the new groups in SQL."""
        started = self._start(job_id, "acl")
        if started is None:
            return "skipped"
        job, document = started
        new_groups = list((job.payload or {}).get("groups") or [])
        try:
            self._pipeline.set_groups(document.id, list(document.groups or []), new_groups)
        except Exception as exc:  # noqa: BLE001 - the job must end with a message
            log.exception("changing the groups of %s failed", document.id)
            with self._sessions.begin() as session:
                self._finish(
                    session, session.get(Job, job_id), "failed", f"could not change groups: {exc}"
                )
            return "failed"
        with self._sessions.begin() as session:
            doc = session.get(Document, document.id)
            if doc is not None:
                doc.groups = sorted(new_groups)
            self._finish(session, session.get(Job, job_id), "done")
        return "done"

    def run_delete(self, job_id: str) -> str:
        """Remove a document from the stores, SQL and the uploads folder."""
        started = self._start(job_id, "delete")
        if started is None:
            return "skipped"
        _, document = started
        try:
            self._pipeline.delete(document.id)
        except Exception as exc:  # noqa: BLE001
            log.exception("delete of %s failed", document.id)
            with self._sessions.begin() as session:
                self._finish(
                    session,
                    session.get(Job, job_id),
                    "failed",
                    f"could not delete from the index: {exc}",
                )
            return "failed"
        with self._sessions.begin() as session:
            doc = session.get(Document, document.id)
            if doc is not None:
                Path(doc.stored_path).unlink(missing_ok=True)
                session.delete(doc)
            forget_quotes(session, document.id)
            self._finish(session, session.get(Job, job_id), "done")
        return "done"


def forget_quotes(session: Any, document_id: str) -> int:
    """Drop a deleted document's citations (and their quotes) from every stored answer.

    A deleted document must not live on in conversations: their citations would still
    show, and replay, its text. Returns how many messages changed.
    """
    changed = 0
    mentioning = select(Message).where(
        Message.role == "assistant", cast(Message.citations, Text).contains(document_id)
    )
    for message in session.scalars(mentioning):
        citations = list(message.citations or [])
        kept = [
            c
            for c in citations
            if not (isinstance(c, dict) and c.get("document_id") == document_id)
        ]
        if len(kept) != len(citations):
            message.citations = kept
            changed += 1
    return changed


def _user_facing(message: str, document: Document) -> str:
    """Name the file as the uploader knows it, not by its generated name on disk."""
    stored = Path(document.stored_path)
    return message.replace(str(stored), document.filename).replace(stored.name, document.filename)
