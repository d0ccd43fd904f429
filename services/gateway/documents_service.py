"""Documents: register an upload (dedup by content hash), list, show, delete via a job."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from services.db import Document, Group, Job, new_id
from services.gateway.access import may_read
from services.gateway.auth_service import CurrentUser
from services.gateway.errors import BadRequest, Forbidden, NotFound, UpstreamUnavailable
from services.gateway.job_queue import JobQueue
from services.gateway.uploads import ReceivedUpload, file_extension

log = logging.getLogger(__name__)


def parse_groups(raw: str | None) -> list[str]:
    """``"hr, legal"`` -> ``["hr", "legal"]`` (sorted, unique); empty means everyone."""
    return sorted({part.strip() for part in (raw or "").split(",") if part.strip()})


def document_json(doc: Document) -> dict:
    return {
        "id": doc.id,
        "document_id": doc.id,
        "filename": doc.filename,
        "title": doc.title,
        "extension": doc.extension,
        "size": doc.size_bytes,
        "groups": list(doc.groups or []),
        "status": doc.status,
        "chunk_count": doc.chunk_count,
        "error": doc.error,
        "uploaded_by": doc.uploaded_by,
        "content_hash": doc.content_hash,
        "created_at": doc.created_at.isoformat(),
    }


def job_json(job: Job) -> dict:
    def iso(moment):
        return moment.isoformat() if moment else None

    return {
        "id": job.id,
        "job_id": job.id,
        "document_id": job.document_id,
        "kind": job.kind,
        "state": job.state,
        "progress": round(job.progress, 4),
        "stage": job.stage,
        "error": job.error,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }


class DocumentsService:
    def __init__(self, sessions: sessionmaker, queue: JobQueue, uploads_dir: Path):
        self._sessions = sessions
        self._queue = queue
        self._uploads_dir = uploads_dir

    def register_upload(self, upload: ReceivedUpload, user: CurrentUser) -> tuple[dict, bool]:
        """Store the upload as a document and queue its ingest; ``(body, created)``.

        Re-uploading content we already hold returns the existing document (``created``
        False, ``"duplicate": true``); a previous failed attempt at the same content is
        replaced.
        """
        from ingest.hashing import content_hash

        groups = parse_groups(upload.fields.get("groups"))
        title = (
            (upload.fields.get("title") or "").strip()[:500]
            or Path(upload.filename).stem
            or upload.filename
        )
        try:
            digest = content_hash(upload.path)
            with self._sessions.begin() as session:
                self._check_groups(session, groups)
                existing = session.scalar(select(Document).where(Document.content_hash == digest))
                if existing is not None and existing.status != "failed":
                    upload.discard()
                    return self._duplicate(session, existing), False
                if existing is not None:
                    session.execute(delete(Job).where(Job.document_id == existing.id))
                    session.delete(existing)
                    session.flush()
                document_id = new_id()
                stored = self._uploads_dir / f"{document_id}{file_extension(upload.filename)}"
                upload.path.replace(stored)
                doc = Document(
                    id=document_id,
                    filename=upload.filename,
                    title=title,
                    content_hash=digest,
                    extension=file_extension(upload.filename),
                    size_bytes=upload.size,
                    stored_path=str(stored.resolve()),
                    groups=groups,
                    status="queued",
                    uploaded_by=user.username,
                )
                job = Job(document_id=document_id, kind="ingest", state="queued")
                session.add_all([doc, job])
                session.flush()
                job_id = job.id
        except IntegrityError:
            upload.discard()
            with self._sessions() as session:
                existing = session.scalar(select(Document).where(Document.content_hash == digest))
                if existing is None:
                    raise
                return self._duplicate(session, existing), False
        except BaseException:
            upload.discard()
            raise
        self._enqueue("ingest", job_id, document_id)
        return {"document_id": document_id, "job_id": job_id, "duplicate": False}, True

    @staticmethod
    def _check_groups(session, groups: list[str]) -> None:
        if not groups:
            return
        known = set(session.scalars(select(Group.name).where(Group.name.in_(groups))))
        missing = sorted(set(groups) - known)
        if missing:
            raise BadRequest(
                f"unknown group(s): {', '.join(missing)}; create them under /api/admin/groups first"
            )

    @staticmethod
    def _duplicate(session, existing: Document) -> dict:
        job = session.scalar(
            select(Job)
            .where(Job.document_id == existing.id, Job.kind == "ingest")
            .order_by(Job.created_at.desc())
            .limit(1)
        )
        return {
            "document_id": existing.id,
            "job_id": job.id if job else None,
            "duplicate": True,
            "status": existing.status,
        }

    def _enqueue(
        self, kind: str, job_id: str, document_id: str, previous_status: str | None = None
    ) -> None:
        try:
            self._queue.enqueue(kind, job_id)
        except Exception as exc:  # noqa: BLE001 - any broker failure is the same to the caller
            log.exception("enqueue of %s job %s failed", kind, job_id)
            message = f"the job queue is unreachable: {exc}"
            with self._sessions.begin() as session:
                job = session.get(Job, job_id)
                job.state, job.error = "failed", message
                doc = session.get(Document, document_id)
                if doc is not None and kind == "ingest":
                    doc.status, doc.error = "failed", message
                elif doc is not None:  # the delete never started: the document is still whole
                    doc.status = previous_status or doc.status
            raise UpstreamUnavailable(message) from exc

    def list(self, user: CurrentUser) -> list[dict]:
        with self._sessions() as session:
            docs = session.scalars(select(Document).order_by(Document.created_at.desc()))
            return [document_json(d) for d in docs if may_read(user, d.groups)]

    def _readable(self, session, document_id: str, user: CurrentUser) -> Document:
        doc = session.get(Document, document_id)
        if doc is None or not may_read(user, doc.groups):
            raise NotFound(f"no document with id {document_id}")
        return doc

    def get(self, document_id: str, user: CurrentUser) -> dict:
        with self._sessions() as session:
            return document_json(self._readable(session, document_id, user))

    def delete(self, document_id: str, user: CurrentUser) -> dict:
        """Queue removal of the document from every store; returns the delete job."""
        with self._sessions.begin() as session:
            doc = self._readable(session, document_id, user)
            if not user.can_manage_documents:
                raise Forbidden("only admins and editors may delete documents")
            pending = session.scalar(
                select(Job).where(
                    Job.document_id == document_id,
                    Job.kind == "delete",
                    Job.state.in_(("queued", "running")),
                )
            )
            if pending is not None:
                return {"document_id": document_id, "job_id": pending.id}
            previous_status, doc.status = doc.status, "deleting"
            job = Job(document_id=document_id, kind="delete", state="queued")
            session.add(job)
            session.flush()
            job_id = job.id
        self._enqueue("delete", job_id, document_id, previous_status)
        return {"document_id": document_id, "job_id": job_id}

    def job(self, job_id: str, user: CurrentUser) -> dict:
        with self._sessions() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise NotFound(f"no job with id {job_id}")
            if not user.can_manage_documents:
                doc = session.get(Document, job.document_id)
                if doc is None or not may_read(user, doc.groups):
                    raise NotFound(f"no job with id {job_id}")
            return job_json(job)

    def jobs(self, user: CurrentUser, limit: int) -> list[dict]:
        if not user.can_manage_documents:
            raise Forbidden("only admins and editors may list jobs")
        with self._sessions() as session:
            return [
                job_json(j)
                for j in session.scalars(select(Job).order_by(Job.created_at.desc()).limit(limit))
            ]
