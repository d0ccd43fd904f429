"""Documents: register an upload (dedup by content hash), list, show, delete via a job."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from services.db import Document, Group, Job, new_id
from services.gateway.access import checked_groups, may_read, parse_groups
from services.gateway.auth_service import CurrentUser
from services.gateway.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    UpstreamUnavailable,
)
from services.gateway.job_queue import JobQueue
from services.gateway.uploads import ReceivedUpload, file_extension

log = logging.getLogger(__name__)


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
        False, ``"duplicate": true``) when the upload names no groups or the same groups;
        naming other groups is refused with 409 (groups change only through
        ``PUT /api/documents/{id}/groups``), so a re-upload never silently keeps, widens or
        narrows access. A caller who may not read the existing document learns nothing
        of it but that the content is held. A failed earlier attempt is replaced.
        """
        from ingest.hashing import content_hash

        groups_given = "groups" in upload.fields
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
                    return self._duplicate(session, existing, user, groups_given, groups), False
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
                return self._duplicate(session, existing, user, groups_given, groups), False
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
    def _duplicate(
        session, existing: Document, user: CurrentUser, groups_given: bool, groups: list[str]
    ) -> dict:
        if not may_read(user, existing.groups):
            raise Conflict(
                "this content is already held in a document you may not access; "
                "ask an administrator to share it with you"
            )
        if groups_given and sorted(existing.groups or []) != groups:
            current = ", ".join(existing.groups or []) or "everyone"
            raise Conflict(
                f"this content is already held as document {existing.id}, shared with {current}; "
                f"change its groups with PUT /api/documents/{existing.id}/groups"
            )
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
            "groups": list(existing.groups or []),
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

    def list_for(self, user: CurrentUser) -> list[dict]:
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
        """A job of a document the caller may read (admins: any job); 404 otherwise."""
        with self._sessions() as session:
            job = session.get(Job, job_id)
            if job is None or not self._job_visible(session, job, user):
                raise NotFound(f"no job with id {job_id}")
            return job_json(job)

    @staticmethod
    def _job_visible(session, job: Job, user: CurrentUser) -> bool:
        if user.is_admin:
            return True
        doc = session.get(Document, job.document_id)
        return doc is not None and may_read(user, doc.groups)

    def jobs(self, user: CurrentUser, limit: int) -> list[dict]:
        """Recent jobs of documents the caller may read (admins: all, deleted ones included)."""
        if not user.can_manage_documents:
            raise Forbidden("only admins and editors may list jobs")
        with self._sessions() as session:
            statement = select(Job).order_by(Job.created_at.desc())
            if user.is_admin:
                return [job_json(j) for j in session.scalars(statement.limit(limit))]
            readable = [
                j
                for j in session.scalars(statement.limit(limit * 10))
                if self._job_visible(session, j, user)
            ]
            return [job_json(j) for j in readable[:limit]]

    def change_groups(self, document_id: str, groups: Sequence[str], user: CurrentUser) -> dict:
        """Queue ONE job that rewrites every chunk's ACL in both stores; 202 {document_id, job_id}.

        The document's ``groups`` in SQL change when the job has rewritten both stores,
        so listing and retrieval never disagree for long; the job narrows first (see
        ``IngestPipeline.set_groups``), so no one outside both the old and the new
        groups can read a chunk in between. Empty ``groups`` means everyone.
        """
        groups = checked_groups(groups)
        with self._sessions.begin() as session:
            doc = self._readable(session, document_id, user)
            if not user.can_manage_documents:
                raise Forbidden("only admins and editors may change a document's groups")
            self._check_groups(session, groups)
            if doc.status not in ("ready", "failed"):
                raise Conflict(
                    f"document {document_id} is {doc.status}; change its groups when it is ready"
                )
            busy = session.scalar(
                select(Job).where(
                    Job.document_id == document_id, Job.state.in_(("queued", "running"))
                )
            )
            if busy is not None:
                raise Conflict(f"document {document_id} has a {busy.kind} job in progress")
            if doc.status == "failed":  # nothing indexed: the new groups apply at once
                doc.groups = groups
                return {"document_id": document_id, "job_id": None, "groups": groups}
            job = Job(
                document_id=document_id, kind="acl", state="queued", payload={"groups": groups}
            )
            session.add(job)
            session.flush()
            job_id = job.id
        self._enqueue("acl", job_id, document_id, "ready")
        return {"document_id": document_id, "job_id": job_id, "groups": groups}
