"""Routes: rename, delete and export (Markdown) one of the caller's conversations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from services.gateway.conversation_edits_service import ConversationEditsService
from services.gateway.conversations_service import ConversationsService
from services.gateway.deps import ServicesDep, UserDep

router = APIRouter(prefix="/api/conversations", tags=["conversations"])


class RenameRequest(BaseModel):
    title: str = Field(min_length=1, max_length=500)


class ConversationSummary(BaseModel):
    id: str
    title: str
    created_at: str


class Deleted(BaseModel):
    id: str
    deleted: bool


def edits(services: ServicesDep) -> ConversationEditsService:
    return ConversationEditsService(services.sessions, ConversationsService(services.sessions))


EditsDep = Annotated[ConversationEditsService, Depends(edits)]


@router.patch("/{conversation_id}", response_model=ConversationSummary)
async def rename_conversation(
    conversation_id: str, body: RenameRequest, user: UserDep, service: EditsDep
) -> dict:
    return await run_in_threadpool(service.rename, conversation_id, user, body.title)


@router.delete("/{conversation_id}", response_model=Deleted)
async def delete_conversation(conversation_id: str, user: UserDep, service: EditsDep) -> dict:
    await run_in_threadpool(service.delete, conversation_id, user)
    return {"id": conversation_id, "deleted": True}


@router.get(
    "/{conversation_id}/export",
    response_class=Response,
    responses={200: {"content": {"text/markdown": {}}, "description": "the conversation"}},
)
async def export_conversation(conversation_id: str, user: UserDep, service: EditsDep) -> Response:
    """The conversation as a Markdown download (questions, answers, numbered sources)."""
    filename, markdown = await run_in_threadpool(service.export_markdown, conversation_id, user)
    return Response(
        markdown,
        media_type="text/markdown; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
