"""Routes: upload (streamed multipart), list, show and delete documents."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from services.gateway.deps import ServicesDep, UserDep
from services.gateway.errors import Forbidden
from services.gateway.uploads import receive_upload

router = APIRouter(prefix="/api/documents", tags=["documents"])


@router.post(
    "",
    status_code=202,
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "groups": {
                                "type": "string",
                                "description": "comma-separated group names; none = everyone",
                            },
                            "title": {"type": "string"},
                        },
                    }
                }
            }
        }
    },
)
async def upload(request: Request, user: UserDep, services: ServicesDep) -> JSONResponse:
    """Multipart ``file`` (+ ``groups``, ``title``) -> 202 {document_id, job_id}; 200 for a duplicate."""
    if not user.can_manage_documents:
        raise Forbidden("only admins and editors may upload documents")
    settings = services.settings
    received = await receive_upload(
        request, settings.uploads_dir, settings.max_upload_bytes, services.extensions()
    )
    body, created = await run_in_threadpool(services.documents.register_upload, received, user)
    return JSONResponse(body, status_code=202 if created else 200)


@router.get("")
async def list_documents(user: UserDep, services: ServicesDep) -> dict:
    return {"documents": await run_in_threadpool(services.documents.list, user)}


@router.get("/{document_id}")
async def get_document(document_id: str, user: UserDep, services: ServicesDep) -> dict:
    return await run_in_threadpool(services.documents.get, document_id, user)


@router.delete("/{document_id}", status_code=202)
async def delete_document(document_id: str, user: UserDep, services: ServicesDep) -> dict:
    """Queue removal from every store -> 202 {document_id, job_id}."""
    return await run_in_threadpool(services.documents.delete, document_id, user)
