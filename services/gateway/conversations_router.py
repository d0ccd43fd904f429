"""Routes: the caller's conversations and their messages."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from services.gateway.auth_service import CurrentUser
from services.gateway.deps import Services, current_user, get_services

router = APIRouter(prefix="/api/conversations", tags=["conversations"])


@router.get("")
async def list_conversations(user: CurrentUser = Depends(current_user),
                             services: Services = Depends(get_services)) -> dict:
    return {"conversations": await run_in_threadpool(services.conversations.list, user)}


@router.get("/{conversation_id}")
async def get_conversation(conversation_id: str, user: CurrentUser = Depends(current_user),
                           services: Services = Depends(get_services)) -> dict:
    return await run_in_threadpool(services.conversations.get, conversation_id, user)
