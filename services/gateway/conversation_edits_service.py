"""Conversation housekeeping for the portal's sidebar: rename, delete, export as Markdown.

Kept apart from ``ConversationsService`` (which the chat path writes through) so the chat
path stays small; ownership is checked by the same ``owned`` rule, so another user's
conversation is a 404 here exactly as it is when read.
"""

from __future__ import annotations

import re

from sqlalchemy.orm import sessionmaker

from services.gateway.auth_service import CurrentUser
from services.gateway.conversations_service import ConversationsService
from services.gateway.errors import BadRequest


def citation_line(number: int, citation: dict) -> str:
    """``1. Title, p. 3: "quote"`` (page and quote only where known)."""
    where = citation.get("title") or citation.get("document_id") or "source"
    if citation.get("page"):
        where += f", p. {citation['page']}"
    quote = " ".join(str(citation.get("quote") or "").split())
    return f"{number}. {where}" + (f': "{quote}"' if quote else "")


def conversation_markdown(title: str, created_at: str, messages: list[dict]) -> str:
    """The conversation as a Markdown file a person can keep or mail: turns, then each answer's sources."""
    lines = [f"# {title}", "", f"_Exported from Enclave; started {created_at}._", ""]
    for message in messages:
        speaker = "You" if message["role"] == "user" else "Enclave"
        lines += [f"**{speaker}:**", "", message["content"].strip() or "_(empty)_", ""]
        citations = message.get("citations") or []
        if citations:
            lines += ["Sources:", ""]
            lines += [citation_line(i, c) for i, c in enumerate(citations, 1)]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def export_filename(title: str) -> str:
    """A safe ``.md`` file name from a title (letters, digits, dashes)."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-")[:60].lower()
    return f"{stem or 'conversation'}.md"


class ConversationEditsService:
    def __init__(self, sessions: sessionmaker, conversations: ConversationsService):
        self._sessions = sessions
        self._conversations = conversations

    def rename(self, conversation_id: str, user: CurrentUser, title: str) -> dict:
        cleaned = " ".join(title.split())
        if not cleaned:
            raise BadRequest("title must not be empty")
        with self._sessions.begin() as session:
            conversation = self._conversations.owned(session, conversation_id, user)
            conversation.title = cleaned[:500]
            return {
                "id": conversation.id,
                "title": conversation.title,
                "created_at": conversation.created_at.isoformat(),
            }

    def delete(self, conversation_id: str, user: CurrentUser) -> None:
        """Remove the conversation; its messages (and their feedback) go by the foreign keys' cascade."""
        with self._sessions.begin() as session:
            session.delete(self._conversations.owned(session, conversation_id, user))

    def export_markdown(self, conversation_id: str, user: CurrentUser) -> tuple[str, str]:
        """``(filename, markdown)`` of the caller's conversation."""
        conversation = self._conversations.get(conversation_id, user)
        markdown = conversation_markdown(
            conversation["title"], conversation["created_at"], conversation["messages"]
        )
        return export_filename(conversation["title"]), markdown
