"""Route: the original file of a document, for callers who may read it (citations open it).

A caller who may not read the document gets the same 404 as for a document that does not
exist, so the answer leaks nothing. PDFs are served inline (the portal's pdf.js viewer and
the browser's own viewer open them at a page); every other type is a download with a
sandboxing CSP, and every response carries ``nosniff``: an uploaded HTML or SVG file must
never run as a page of our origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from sqlalchemy.orm import sessionmaker
from starlette.concurrency import run_in_threadpool

from services.db import Document
from services.gateway.access import may_read
from services.gateway.auth_service import CurrentUser
from services.gateway.deps import ServicesDep, UserDep
from services.gateway.errors import NotFound

router = APIRouter(prefix="/api/documents", tags=["documents"])

INLINE_TYPES = {".pdf": "application/pdf"}


def readable_file(sessions: sessionmaker, document_id: str, user: CurrentUser) -> tuple[Path, str]:
    """``(stored path, download name)`` of a document the user may read, else ``NotFound``."""
    with sessions() as session:
        doc = session.get(Document, document_id)
        if doc is None or not may_read(user, doc.groups) or doc.status == "deleting":
            raise NotFound(f"no document with id {document_id}")
        path = Path(doc.stored_path)
        if not path.is_file():
            raise NotFound(f"the original file of document {document_id} is no longer stored")
        return path, doc.filename


@router.get(
    "/{document_id}/file",
    response_class=FileResponse,
    responses={200: {"content": {"application/pdf": {}, "application/octet-stream": {}}}},
)
async def document_file(document_id: str, user: UserDep, services: ServicesDep) -> FileResponse:
    path, filename = await run_in_threadpool(readable_file, services.sessions, document_id, user)
    media_type = INLINE_TYPES.get(path.suffix.lower())
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"}
    if media_type is None:  # (a sandbox CSP would also stop Chromium's own PDF viewer)
        headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return FileResponse(
        path,
        media_type=media_type or "application/octet-stream",
        filename=filename,
        content_disposition_type="inline" if media_type else "attachment",
        headers=headers,
    )
