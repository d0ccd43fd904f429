"""Routes: create a draft from a template, list drafts, show one, download its DOCX."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from services.gateway.deps import ServicesDep, UserDep
from services.gateway.drafting_models import DraftList, DraftOut, DraftRequest

router = APIRouter(prefix="/api/drafts", tags=["drafting"])
DOCX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@router.post("", status_code=201, response_model=DraftOut)
async def create_draft(body: DraftRequest, user: UserDep, services: ServicesDep) -> dict:
    """201 {draft_id, report}; 422 {error: {code, message, problems}} listing every problem."""
    return await services.drafts.create(
        user, body.template_id, body.fields, body.instructions, body.include
    )


@router.get("", response_model=DraftList)
async def list_drafts(user: UserDep, services: ServicesDep) -> dict:
    return {"drafts": await run_in_threadpool(services.drafts.list, user)}


@router.get(
    "/{draft_id}.docx",
    response_class=FileResponse,
    responses={200: {"content": {DOCX_MEDIA_TYPE: {}}}},
)
async def download_draft(draft_id: str, user: UserDep, services: ServicesDep) -> FileResponse:
    path = await run_in_threadpool(services.drafts.docx_path, draft_id, user)
    return FileResponse(path, media_type=DOCX_MEDIA_TYPE, filename=f"draft-{draft_id}.docx")


@router.get("/{draft_id}", response_model=DraftOut)
async def get_draft(draft_id: str, user: UserDep, services: ServicesDep) -> dict:
    return await run_in_threadpool(services.drafts.get, draft_id, user)
