"""Conversations: a user's chats and their messages with the citations shown."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from services.db import Conversation, Message
from services.gateway.auth_service import CurrentUser
from services.gateway.errors import NotFound


def message_json(message: Message) -> dict:
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "citations": message.citations or [],
        "created_at": message.created_at.isoformat(),
    }


class ConversationsService:
    def __init__(self, sessions: sessionmaker):
        self._sessions = sessions

    def owned(self, session, conversation_id: str, user: CurrentUser) -> Conversation:
        conversation = session.get(Conversation, conversation_id)
        if conversation is None or conversation.username != user.username:
            raise NotFound(f"no conversation with id {conversation_id}")
        return conversation

    def list(self, user: CurrentUser) -> list[dict]:
        with self._sessions() as session:
            rows = session.scalars(
                select(Conversation)
                .where(Conversation.username == user.username)
                .order_by(Conversation.created_at.desc())
            )
            return [
                {"id": c.id, "title": c.title, "created_at": c.created_at.isoformat()} for c in rows
            ]

    def get(self, conversation_id: str, user: CurrentUser) -> dict:
        with self._sessions() as session:
            conversation = self.owned(session, conversation_id, user)
            return {
                "id": conversation.id,
                "title": conversation.title,
                "created_at": conversation.created_at.isoformat(),
                "messages": [message_json(m) for m in self.messages(session, conversation.id)],
            }

    @staticmethod
    def messages(session, conversation_id: str) -> list[Message]:
        return list(
            session.scalars(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .order_by(Message.created_at, Message.role.desc())
            )
        )

    def history(self, conversation_id: str, user: CurrentUser, turns: int) -> list[dict]:
        """The last ``turns`` user/assistant pairs as chat messages."""
        with self._sessions() as session:
            self.owned(session, conversation_id, user)
            rows = self.messages(session, conversation_id)[-2 * turns :]
            return [{"role": m.role, "content": m.content} for m in rows]

    def start(self, user: CurrentUser, first_message: str) -> str:
        title = " ".join(first_message.split())[:80] or "Conversation"
        with self._sessions.begin() as session:
            conversation = Conversation(username=user.username, title=title)
            session.add(conversation)
            session.flush()
            return conversation.id

    def append_turn(
        self, conversation_id: str, question: str, answer: str, citations: list[dict]
    ) -> str:
        with self._sessions.begin() as session:
            session.add(
                Message(
                    conversation_id=conversation_id, role="user", content=question, citations=[]
                )
            )
            session.flush()
            reply = Message(
                conversation_id=conversation_id,
                role="assistant",
                content=answer,
                citations=citations,
            )
            session.add(reply)
            session.flush()
            return reply.id
