"""Search: the caller's access scope, hybrid retrieval, and an audit line per query.

The ``HybridSearcher`` (embedding model + store handles) is built on first use and rebuilt
when the set of indexed documents changed since (another process, the worker, writes the
stores; rebuilding reopens them so new chunks are visible and deleted ones gone).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import sessionmaker

from services.db import AuditEntry
from services.gateway.access import scope_for
from services.gateway.auth_service import CurrentUser
from services.gateway.errors import BadRequest

if TYPE_CHECKING:
    from retriever.search import SearchHit


class SearcherProvider:
    """Builds the searcher on first use and hands out that one (thread-safe).

    One searcher per process is enough: the vector store notices writes made by the
    worker process itself (``ingest.stores.vector``), so nothing here must rebuild it.
    """

    def __init__(self, factory: Callable[[], Any]):
        self._factory = factory
        self._lock = threading.Lock()
        self._searcher: Any = None

    def get(self) -> Any:
        with self._lock:
            if self._searcher is None:
                self._searcher = self._factory()
            return self._searcher

    @property
    def loaded(self) -> bool:
        return self._searcher is not None


HIT_KEYS = ("chunk_id", "document_id", "title", "page", "section", "text", "score")


def pick_fields(item: Any, keys: Sequence[str]) -> dict:
    """The named fields of a retriever dataclass (a search hit, a citation)."""
    if not is_dataclass(item) or isinstance(item, type):
        raise TypeError(f"expected a dataclass instance, got {type(item).__name__}")
    data = asdict(item)
    return {key: data.get(key) for key in keys}


def hit_json(hit: SearchHit) -> dict:
    """The JSON of a search hit (``schemas.SearchHitOut``); the score as a plain float."""
    out = pick_fields(hit, HIT_KEYS)
    if out["score"] is not None:
        out["score"] = float(out["score"])
    return out


class SearchService:
    def __init__(self, sessions: sessionmaker, searchers: SearcherProvider, default_k: int):
        self._sessions = sessions
        self._searchers = searchers
        self._default_k = default_k

    def retrieve(self, query: str, k: int | None, user: CurrentUser) -> list[Any]:
        """Hits the user may see, best first (the ACL is part of the retrieval query)."""
        query = query.strip()
        if not query:
            raise BadRequest("query must not be empty")
        k = k or self._default_k
        if not 1 <= k <= 100:
            raise BadRequest("k must be between 1 and 100")
        return list(self._searchers.get().search(query, k, scope_for(user)))

    def search(self, query: str, k: int | None, user: CurrentUser) -> dict:
        hits = self.retrieve(query, k, user)
        self.audit(user, "search", query, [h.chunk_id for h in hits])
        return {"results": [hit_json(h) for h in hits]}

    def audit(
        self,
        user: CurrentUser,
        action: str,
        query: str,
        chunk_ids: list[str],
        answer: str | None = None,
    ) -> None:
        """Append one line to the audit trail (append-only; see ``AuditService``)."""
        with self._sessions.begin() as session:
            session.add(
                AuditEntry(
                    username=user.username,
                    action=action,
                    query=query[:10000],
                    chunk_ids=list(chunk_ids),
                    answer=answer,
                )
            )
