"""Conversations: a user's chats and their messages with the citations shown."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.db import Conversation, Document, Message
from services.gateway.access import may_read
from services.gateway.auth_service import CurrentUser
from services.gateway.errors import NotFound


def message_json(message: Message, readable: Callable[[str], bool] | None = None) -> dict:
    """A message; with ``readable``, citations of documents the caller may no longer read are left out."""
    citations = [
        c
        for c in message.citations or []
        if readable is None or (isinstance(c, dict) and readable(str(c.get("document_id"))))
    ]
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "citations": citations,
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

    def list_for(self, user: CurrentUser) -> list[dict]:
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
            messages = self.messages(session, conversation.id)
            readable = _readable_documents(session, messages, user)
            return {
                "id": conversation.id,
                "title": conversation.title,
                "created_at": conversation.created_at.isoformat(),
                "messages": [message_json(m, readable.__contains__) for m in messages],
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


def _readable_documents(session: Session, messages: list[Message], user: CurrentUser) -> set[str]:
    """Ids of cited documents that still exist and that ``user`` may read now.

    Deleting a document scrubs its quotes from stored answers (the delete job); this also
    hides citations of documents whose groups changed since the answer was given.
    """
    cited = {
        str(c.get("document_id"))
        for m in messages
        for c in m.citations or []
        if isinstance(c, dict) and c.get("document_id")
    }
    if not cited:
        return set()
    documents = session.scalars(select(Document).where(Document.id.in_(cited)))
    return {d.id for d in documents if may_read(user, d.groups)}
