"""Routes: the caller's conversations and their messages."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from services.gateway.deps import ServicesDep, UserDep
from services.gateway.schemas import ConversationList, ConversationOut

router = APIRouter(prefix="/api/conversations", tags=["conversations"])


@router.get("", response_model=ConversationList)
async def list_conversations(user: UserDep, services: ServicesDep) -> dict:
    return {"conversations": await run_in_threadpool(services.conversations.list_for, user)}


@router.get("/{conversation_id}", response_model=ConversationOut)
async def get_conversation(conversation_id: str, user: UserDep, services: ServicesDep) -> dict:
    return await run_in_threadpool(services.conversations.get, conversation_id, user)
