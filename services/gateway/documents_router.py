"""Routes: upload (streamed multipart), list, show and delete documents."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from services.gateway.deps import EditorDep, ServicesDep, UserDep, client_address
from services.gateway.schemas import DocumentList, DocumentOut, JobRef, UploadOut
from services.gateway.uploads import receive_upload

router = APIRouter(prefix="/api/documents", tags=["documents"])


@router.post(
    "",
    status_code=202,
    response_model=UploadOut,
    responses={200: {"model": UploadOut, "description": "content already held (duplicate)"}},
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
                                "description": (
                                    "comma-separated group names that may read it; empty or "
                                    "absent = everyone (public). Re-uploading held content "
                                    "with other groups is 409: use PUT .../groups"
                                ),
                            },
                            "title": {"type": "string"},
                        },
                    }
                }
            }
        }
    },
)
async def upload(request: Request, user: EditorDep, services: ServicesDep) -> JSONResponse:
    """Multipart ``file`` (+ ``groups``, ``title``) -> 202 {document_id, job_id}; 200 for a duplicate."""
    services.upload_limit.hit(user.id, client_address(request))
    settings = services.settings
    received = await receive_upload(
        request, settings.uploads_dir, settings.max_upload_bytes, services.extensions()
    )
    body, created = await run_in_threadpool(services.documents.register_upload, received, user)
    return JSONResponse(body, status_code=202 if created else 200)


@router.get("", response_model=DocumentList)
async def list_documents(user: UserDep, services: ServicesDep) -> dict:
    return {"documents": await run_in_threadpool(services.documents.list_for, user)}


@router.get("/{document_id}", response_model=DocumentOut)
async def get_document(document_id: str, user: UserDep, services: ServicesDep) -> dict:
    return await run_in_threadpool(services.documents.get, document_id, user)


@router.delete("/{document_id}", status_code=202, response_model=JobRef)
async def delete_document(document_id: str, user: UserDep, services: ServicesDep) -> dict:
    """Queue removal from every store -> 202 {document_id, job_id}."""
    return await run_in_threadpool(services.documents.delete, document_id, user)


class GroupsChange(BaseModel):
    groups: list[str] = Field(
        max_length=100,
        description="the complete new list of groups that may read the document; empty = everyone",
    )


class GroupsChangeOut(BaseModel):
    document_id: str
    job_id: str | None = Field(
        description="the job rewriting the ACL of every chunk (None: nothing indexed)"
    )
    groups: list[str]


@router.put("/{document_id}/groups", status_code=202, response_model=GroupsChangeOut)
async def change_groups(
    document_id: str, body: GroupsChange, user: EditorDep, services: ServicesDep
) -> dict:
    """Change who may read a document: ONE job rewrites every chunk's ACL in both stores."""
    return await run_in_threadpool(services.documents.change_groups, document_id, body.groups, user)
