"""Routes: upload a template (multipart, new version per name), list templates, show one."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from services.gateway.deps import ServicesDep, UserDep
from services.gateway.drafting_models import TemplateList, TemplateOut
from services.gateway.errors import Forbidden
from services.gateway.templates_service import TEMPLATE_EXTENSIONS
from services.gateway.uploads import multipart_openapi, receive_upload

router = APIRouter(prefix="/api/templates", tags=["drafting"])


@router.post(
    "",
    status_code=201,
    response_model=TemplateOut,
    openapi_extra=multipart_openapi(
        {"name": {"type": "string", "description": "template name (default: file name)"}}
    ),
)
async def upload_template(request: Request, user: UserDep, services: ServicesDep) -> dict:
    """Multipart ``file`` (.md/.docx) + ``name`` -> 201 with the derived field schema; 422 lists every problem."""
    if not user.can_manage_documents:
        raise Forbidden("only admins and editors may upload templates")
    settings = services.settings
    received = await receive_upload(
        request, settings.uploads_dir, settings.max_upload_bytes, TEMPLATE_EXTENSIONS
    )
    return await run_in_threadpool(services.templates.register_upload, received, user)


@router.get("", response_model=TemplateList)
async def list_templates(_user: UserDep, services: ServicesDep) -> dict:
    return {"templates": await run_in_threadpool(services.templates.list)}


@router.get("/{template_id}", response_model=TemplateOut)
async def get_template(template_id: str, _user: UserDep, services: ServicesDep) -> dict:
    return await run_in_threadpool(services.templates.get, template_id)
