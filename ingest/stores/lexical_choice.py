"""Pick the lexical index the config names: SQLite FTS5 (embedded) or PostgreSQL (server).

Both classes have one interface (``LexicalStore``); the pipeline and the searcher only see
that, so the choice is made here once. The PostgreSQL module is imported only when chosen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from ingest.chunking import Chunk
from ingest.config import IngestConfig
from ingest.stores.lexical import LexicalIndex


class LexicalStore(Protocol):
    """What the pipeline and the searcher use of a lexical index."""

    def reachable(self) -> bool: ...
    def add(self, chunks: list[Chunk], groups: Iterable[str] = ()) -> None: ...
    def delete_document(self, document_id: str) -> int: ...
    def set_acl(self, document_id: str, acl_columns: tuple[int, str]) -> int: ...
    def search(self, query: str, k: int, scope: Any) -> list[tuple[str, float]]: ...
    def get(self, chunk_ids: Iterable[str]) -> dict[str, Chunk]: ...
    def document_chunk_ids(self, document_id: str) -> list[str]: ...
    def count(self, document_id: str | None = None) -> int: ...
    def fts_count(self) -> int: ...
    def export_rows(self) -> list[dict[str, Any]]: ...
    def import_rows(self, rows: Iterable[dict[str, Any]]) -> int: ...


def open_lexical_index(config: IngestConfig) -> LexicalStore:
    """The lexical index of ``config``: FTS5 file under data_dir, or PostgreSQL full-text."""
    if config.lexical_backend == "postgres":
        from ingest.stores.lexical_pg import PostgresLexicalIndex

        return PostgresLexicalIndex(config.lexical_database_url or "")
    return LexicalIndex(config.lexical_path)
